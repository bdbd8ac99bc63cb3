// Package examplemigrations holds a small goose migration set embedded in the binary, used by the
// demo command (and tests), and never as a default: a real fleet must name its own. It exercises what real sets need: a foreign key, a
// non-transactional CREATE INDEX CONCURRENTLY and a PL/pgSQL function. It uses unqualified names
// only, so it works for database-per-tenant and schema-per-tenant targets alike.
package examplemigrations

import "embed"

// FS holds the migration files at its root: 00001_create_users.sql, 00002_create_notes.sql,
// 00003_notes_user_id_index.sql and 00004_user_note_count.sql.
//
//go:embed *.sql
var FS embed.FS
