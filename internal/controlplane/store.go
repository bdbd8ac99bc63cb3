package controlplane

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/tenantmigrate/tenantmigrate/internal/labels"
	"github.com/tenantmigrate/tenantmigrate/internal/servers"
)

const (
	// DefaultPageSize is the page size of List, ScanBehind and ListFailed
	// when their limit is 0 or negative.
	DefaultPageSize = 100
	// MaxPageSize caps the limit of List, ScanBehind and ListFailed.
	MaxPageSize = 10_000
)

// tenantColumns are the columns scanTenant reads, in its order.
const tenantColumns = `id, database_url, coalesce(key_id, ''), coalesce(schema_name, ''), migrations_version,
	coalesce(migrations_status, ''), coalesce(last_error, ''), cursor_id, target_seq, created_at, updated_at, labels`

// Store reads and writes the tenants table. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	cipher *Cipher
}

// NewStore returns a Store on the control-plane pool. cipher encrypts and
// decrypts tenant database URLs: every write is under its current key, and
// reads open rows under any of its keys. With a nil cipher the methods that
// only read or record migration state work, and those that store or return
// a database URL (Create, Upsert, Patch, Get, List, Rekey) return
// ErrNoEncryptionKey.
func NewStore(pool *pgxpool.Pool, cipher *Cipher) *Store {
	return &Store{pool: pool, cipher: cipher}
}

// Pool returns the control-plane pool the Store uses.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Create inserts a tenant from t.ID, t.DatabaseURL, t.Schema and t.Labels
// (the other fields are ignored) and returns the stored row. It returns an
// error wrapping ErrInvalid for a bad id, URL, schema or labels, ErrTenantExists when the id is
// taken, and ErrNoEncryptionKey without a cipher.
func (s *Store) Create(ctx context.Context, t Tenant) (Tenant, error) {
	if err := validateTenant(t); err != nil {
		return Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	enc, err := s.encrypt(t.DatabaseURL)
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, err)
	}
	out, _, err := scanTenant(s.pool.QueryRow(ctx, `
		INSERT INTO tenantmigrate.tenants (id, database_url, key_id, schema_name, server, labels)
		VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), $6)
		RETURNING `+tenantColumns,
		t.ID, enc.b, enc.keyID, t.Schema, servers.Of(t.DatabaseURL, t.Labels), labelsArg(t.Labels)))
	if err != nil {
		if isUniqueViolation(err, "tenants_pkey") {
			return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, ErrTenantExists)
		}
		return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, err)
	}
	out.DatabaseURL = t.DatabaseURL
	return out, nil
}

// Upsert creates the tenant t (as Create) or, when it exists, sets its
// database URL and schema to t's, and its labels to t.Labels unless they
// are nil (nil keeps them). It reports whether the tenant was created.
// Setting the values the tenant already has writes nothing (and so notifies
// no listener) and keeps the migration state; changing the URL or schema
// clears it, as Patch does; labels never do.
func (s *Store) Upsert(ctx context.Context, t Tenant) (Tenant, bool, error) {
	if err := validateTenant(t); err != nil {
		return Tenant{}, false, fmt.Errorf("upsert tenant: %w", err)
	}
	if s.cipher == nil {
		return Tenant{}, false, fmt.Errorf("upsert tenant %s: %w", t.ID, ErrNoEncryptionKey)
	}
	// A concurrent Upsert can insert the tenant between our SELECT and our
	// INSERT; the next attempt then finds and locks its row.
	const maxAttempts = 3
	for attempt := 1; ; attempt++ {
		var (
			out     Tenant
			created bool
		)
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			cur, enc, err := selectForUpdate(ctx, tx, t.ID)
			if errors.Is(err, ErrTenantNotFound) {
				out, created, err = s.insertIfAbsent(ctx, tx, t)
				return err
			}
			if err != nil {
				return err
			}
			out, err = s.updateLocked(ctx, tx, cur, enc, &t.DatabaseURL, &t.Schema, t.Labels)
			return err
		})
		if errors.Is(err, errConcurrentInsert) && attempt < maxAttempts {
			continue
		}
		if err != nil {
			return Tenant{}, false, fmt.Errorf("upsert tenant %s: %w", t.ID, err)
		}
		return out, created, nil
	}
}

var errConcurrentInsert = errors.New("tenant inserted concurrently")

// insertIfAbsent inserts t unless a concurrent transaction did; it returns
// errConcurrentInsert then.
func (s *Store) insertIfAbsent(ctx context.Context, tx pgx.Tx, t Tenant) (Tenant, bool, error) {
	enc, err := s.encrypt(t.DatabaseURL)
	if err != nil {
		return Tenant{}, false, err
	}
	out, _, err := scanTenant(tx.QueryRow(ctx, `
		INSERT INTO tenantmigrate.tenants (id, database_url, key_id, schema_name, server, labels)
		VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''), $6)
		ON CONFLICT (id) DO NOTHING
		RETURNING `+tenantColumns,
		t.ID, enc.b, enc.keyID, t.Schema, servers.Of(t.DatabaseURL, t.Labels), labelsArg(t.Labels)))
	if errors.Is(err, ErrTenantNotFound) {
		return Tenant{}, false, errConcurrentInsert
	}
	if err != nil {
		return Tenant{}, false, err
	}
	out.DatabaseURL = t.DatabaseURL
	return out, true, nil
}

// Patch changes the database URL, the schema and/or the labels (merged, see
// TenantPatch.Labels) of tenant id and returns the tenant. Labels never
// change the migration state. A change of either makes its migration state unknown: version,
// status and last error are cleared (the tenant reads as never migrated, so
// the next gate check or scan runs the migrator on the new target, a no-op
// when it is migrated already) and TargetSeq changes. A patch that changes
// nothing keeps the state. An empty patch returns the tenant
// unchanged. It returns ErrTenantNotFound when there is no such tenant.
func (s *Store) Patch(ctx context.Context, id string, p TenantPatch) (Tenant, error) {
	if p.DatabaseURL != nil {
		if err := ValidateDatabaseURL(*p.DatabaseURL); err != nil {
			return Tenant{}, fmt.Errorf("patch tenant %s: %w", id, err)
		}
	}
	if p.Schema != nil && *p.Schema != "" {
		if err := ValidateSchemaName(*p.Schema); err != nil {
			return Tenant{}, fmt.Errorf("patch tenant %s: %w", id, err)
		}
	}
	for k, v := range p.Labels {
		if err := labels.ValidateKey(k); err != nil {
			return Tenant{}, fmt.Errorf("patch tenant %s: %w", quoteShort(id), invalidError{err})
		}
		if v != nil {
			if err := labels.ValidateValue(k, *v); err != nil {
				return Tenant{}, fmt.Errorf("patch tenant %s: %w", quoteShort(id), invalidError{err})
			}
		}
	}
	if s.cipher == nil {
		return Tenant{}, fmt.Errorf("patch tenant %s: %w", id, ErrNoEncryptionKey)
	}
	if ValidateTenantID(id) != nil {
		return Tenant{}, fmt.Errorf("patch tenant %s: %w", quoteShort(id), ErrTenantNotFound)
	}
	var out Tenant
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		cur, enc, err := selectForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		var newLabels map[string]string
		if p.Labels != nil {
			newLabels = labels.Merge(cur.Labels, p.Labels)
			if err := labels.Validate(newLabels); err != nil {
				return invalidError{err}
			}
		}
		out, err = s.updateLocked(ctx, tx, cur, enc, p.DatabaseURL, p.Schema, newLabels)
		return err
	})
	if err != nil {
		return Tenant{}, fmt.Errorf("patch tenant %s: %w", id, err)
	}
	return out, nil
}

// selectForUpdate reads and locks the row of tenant id.
func selectForUpdate(ctx context.Context, tx pgx.Tx, id string) (Tenant, sealedURL, error) {
	return scanTenant(tx.QueryRow(ctx,
		`SELECT `+tenantColumns+` FROM tenantmigrate.tenants WHERE id = $1 FOR UPDATE`, id))
}

// updateLocked sets the database URL, schema and labels of the locked row
// cur (enc is its encrypted URL) to the non-nil newURL, newSchema and
// newLabels (validated), writing only if something changes. A write of the
// URL or schema encrypts the URL under the current key, also when only the
// schema changes; a change of labels alone writes only them.
func (s *Store) updateLocked(ctx context.Context, tx pgx.Tx, cur Tenant, enc sealedURL, newURL, newSchema *string, newLabels map[string]string) (Tenant, error) {
	curURL, decryptErr := s.cipher.Decrypt(enc.keyID, enc.b)
	urlChanged := newURL != nil && (decryptErr != nil || curURL != *newURL)
	schemaChanged := newSchema != nil && *newSchema != cur.Schema
	if !urlChanged && decryptErr != nil {
		// The stored URL is needed in the result and cannot be read.
		return Tenant{}, decryptErr
	}
	if newLabels != nil && !maps.Equal(newLabels, cur.Labels) {
		// The "server" label overrides the server of the URL: the server
		// follows the labels (kept as it is when the URL cannot be read).
		server := ""
		if decryptErr == nil {
			server = servers.Of(curURL, newLabels)
		}
		if err := tx.QueryRow(ctx, `
			UPDATE tenantmigrate.tenants SET labels = $2, updated_at = now(),
				server = coalesce(NULLIF($3, ''), server)
			WHERE id = $1
			RETURNING labels, updated_at`, cur.ID, labelsArg(newLabels), server).Scan(&cur.Labels, &cur.UpdatedAt); err != nil {
			return Tenant{}, err
		}
	}
	if !urlChanged && !schemaChanged {
		cur.DatabaseURL = curURL
		return cur, nil
	}

	url, schema := curURL, cur.Schema
	if urlChanged {
		url = *newURL
	}
	if schemaChanged {
		schema = *newSchema
	}
	enc, err := s.encrypt(url)
	if err != nil {
		return Tenant{}, err
	}
	out, _, err := scanTenant(tx.QueryRow(ctx, `
		UPDATE tenantmigrate.tenants
		SET database_url = $2, key_id = $4, schema_name = NULLIF($3, ''), updated_at = now(),
			server = NULLIF($5, ''),
			-- Another target: what was known of the old one says nothing of
			-- it, and a run still under way on the old one must not record.
			target_seq = nextval('tenantmigrate.tenant_target_seq'),
			migrations_version = NULL, migrations_status = NULL, last_error = NULL,
			-- Nor is it the database provisioned for the tenant, if it was.
			provisioned_database = NULL, provision_token = NULL
		WHERE id = $1
		RETURNING `+tenantColumns,
		cur.ID, enc.b, schema, enc.keyID, servers.Of(url, cur.Labels)))
	if err != nil {
		return Tenant{}, err
	}
	out.DatabaseURL = url
	return out, nil
}

// Delete removes tenant id. It returns ErrTenantNotFound when there is no
// such tenant.
func (s *Store) Delete(ctx context.Context, id string) error {
	if ValidateTenantID(id) != nil {
		return fmt.Errorf("delete tenant %s: %w", quoteShort(id), ErrTenantNotFound)
	}
	tag, err := s.pool.Exec(ctx, `DELETE FROM tenantmigrate.tenants WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete tenant %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete tenant %s: %w", id, ErrTenantNotFound)
	}
	return nil
}

// Get returns tenant id with its decrypted database URL. It returns
// ErrTenantNotFound when there is no such tenant (an invalid id never
// matches), ErrNoEncryptionKey without a cipher and an error wrapping
// ErrDecrypt, naming the tenant, when no key of the cipher decrypts the URL;
// the tenant is then returned too, without its URL (Tenant.DecryptError).
func (s *Store) Get(ctx context.Context, id string) (Tenant, error) {
	if s.cipher == nil {
		return Tenant{}, fmt.Errorf("get tenant %s: %w", quoteShort(id), ErrNoEncryptionKey)
	}
	if ValidateTenantID(id) != nil {
		return Tenant{}, fmt.Errorf("get tenant %s: %w", quoteShort(id), ErrTenantNotFound)
	}
	t, enc, err := scanTenant(s.pool.QueryRow(ctx,
		`SELECT `+tenantColumns+` FROM tenantmigrate.tenants WHERE id = $1`, id))
	if err != nil {
		return Tenant{}, fmt.Errorf("get tenant %s: %w", id, err)
	}
	if t.DatabaseURL, err = s.cipher.Decrypt(enc.keyID, enc.b); err != nil {
		// The tenant exists: its state comes back with the error, so that a
		// run can record why it failed.
		t.DecryptError = err.Error()
		return t, fmt.Errorf("get tenant %s: %w", id, err)
	}
	return t, nil
}

// List returns up to limit tenants (see DefaultPageSize, MaxPageSize) with
// cursor_id above afterCursor, ordered by cursor_id, with decrypted URLs. A
// tenant whose URL no key decrypts is listed without it, with
// Tenant.DecryptError set.
// nextCursor is the afterCursor of the next page, 0 when there is none: start
// with 0 and stop at 0.
func (s *Store) List(ctx context.Context, afterCursor int64, limit int) (tenants []Tenant, nextCursor int64, err error) {
	return s.ListMatching(ctx, labels.Selector{}, afterCursor, limit)
}

// ListMatching is List of the tenants whose labels match sel, answered
// through the labels GIN index (see labels.Selector.SQL).
func (s *Store) ListMatching(ctx context.Context, sel labels.Selector, afterCursor int64, limit int) (tenants []Tenant, nextCursor int64, err error) {
	if s.cipher == nil {
		return nil, 0, fmt.Errorf("list tenants: %w", ErrNoEncryptionKey)
	}
	limit = pageSize(limit)
	cond, args := sel.SQL("labels", 3)
	rows, err := s.pool.Query(ctx, `
		SELECT `+tenantColumns+` FROM tenantmigrate.tenants
		WHERE cursor_id > $1 AND `+cond+` ORDER BY cursor_id LIMIT $2`,
		append([]any{afterCursor, limit + 1}, args...)...)
	if err != nil {
		return nil, 0, fmt.Errorf("list tenants: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		t, enc, err := scanTenant(rows)
		if err != nil {
			return nil, 0, fmt.Errorf("list tenants: %w", err)
		}
		if t.DatabaseURL, err = s.cipher.Decrypt(enc.keyID, enc.b); err != nil {
			// One undecryptable row fails only itself, not the page.
			t.DatabaseURL, t.DecryptError = "", err.Error()
		}
		tenants = append(tenants, t)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("list tenants: %w", err)
	}
	tenants, nextCursor = page(tenants, limit, func(t Tenant) int64 { return t.CursorID })
	return tenants, nextCursor, nil
}

// sealedURL is a database URL as stored: its ciphertext and the id of the
// key it is under ("" for a row stored before key ids were recorded).
type sealedURL struct {
	b     []byte
	keyID string
}

// encrypt encrypts a database URL under the current key, or fails without a
// cipher.
func (s *Store) encrypt(url string) (sealedURL, error) {
	if s.cipher == nil {
		return sealedURL{}, ErrNoEncryptionKey
	}
	b, err := s.cipher.Encrypt(url)
	if err != nil {
		return sealedURL{}, err
	}
	return sealedURL{b: b, keyID: s.cipher.KeyID()}, nil
}

// validateTenant validates the fields of t that Create and Upsert store.
func validateTenant(t Tenant) error {
	if err := ValidateTenantID(t.ID); err != nil {
		return err
	}
	if err := ValidateDatabaseURL(t.DatabaseURL); err != nil {
		return err
	}
	if t.Schema != "" {
		if err := ValidateSchemaName(t.Schema); err != nil {
			return err
		}
	}
	return ValidateLabels(t.Labels)
}

// ValidateLabels checks a tenant's labels (labels.Validate); the error
// wraps ErrInvalid and names the label.
func ValidateLabels(m map[string]string) error {
	if err := labels.Validate(m); err != nil {
		return invalidError{err}
	}
	return nil
}

// labelsArg is the labels column value of m: {} for nil.
func labelsArg(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// scanTenant scans tenantColumns; the URL is returned encrypted. No row is
// ErrTenantNotFound.
func scanTenant(row pgx.Row) (Tenant, sealedURL, error) {
	var (
		t      Tenant
		enc    sealedURL
		status string
	)
	err := row.Scan(&t.ID, &enc.b, &enc.keyID, &t.Schema, &t.MigrationsVersion, &status, &t.LastError,
		&t.CursorID, &t.TargetSeq, &t.CreatedAt, &t.UpdatedAt, &t.Labels)
	if errors.Is(err, pgx.ErrNoRows) {
		return Tenant{}, sealedURL{}, ErrTenantNotFound
	}
	if err != nil {
		return Tenant{}, sealedURL{}, err
	}
	t.MigrationsStatus = Status(status)
	return t, enc, nil
}

// pageSize applies DefaultPageSize and MaxPageSize to a requested limit.
func pageSize(limit int) int {
	if limit <= 0 {
		return DefaultPageSize
	}
	return min(limit, MaxPageSize)
}

// page trims items, fetched with LIMIT limit+1, to limit and returns the
// cursor of the next page: the cursor of the last item kept, or 0 when the
// extra item did not come (no more pages).
func page[T any](items []T, limit int, cursor func(T) int64) ([]T, int64) {
	if len(items) <= limit {
		return items, 0
	}
	items = items[:limit]
	return items, cursor(items[limit-1])
}

// isUniqueViolation reports whether err is a unique violation of constraint.
func isUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == constraint
}
