package tenantmigrate

// CachedUpToDate reports whether EnsureMigrated would answer tenant id from
// its cache, without a query. For tests only.
func (o *Orchestrator) CachedUpToDate(id string) bool { return o.cache.has(id) }

// ProvisionTemplateName is the name of o's template database on the
// provision server. For tests only.
func ProvisionTemplateName(o *Orchestrator) string { return o.provisioner.Template() }
