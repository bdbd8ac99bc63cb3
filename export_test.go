package tenantmigrate

// CachedUpToDate reports whether EnsureMigrated would answer tenant id from
// its cache, without a query. For tests only.
func (o *Orchestrator) CachedUpToDate(id string) bool { return o.cache.has(id) }
