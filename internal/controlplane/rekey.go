package controlplane

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/tenantmigrate/tenantmigrate/tenanttype"
)

// The rekey's types are public (package tenanttype).
type (
	// RekeyOptions is tenanttype.RekeyOptions, which configures Store.Rekey.
	RekeyOptions = tenanttype.RekeyOptions
	// RekeyResult is tenanttype.RekeyResult, the counts of Store.Rekey.
	RekeyResult = tenanttype.RekeyResult
	// RekeyFailure is tenanttype.RekeyFailure, a tenant Store.Rekey could
	// not re-encrypt.
	RekeyFailure = tenanttype.RekeyFailure
)

// DefaultRekeyPageSize is tenanttype.DefaultRekeyPageSize.
const DefaultRekeyPageSize = tenanttype.DefaultRekeyPageSize

// rekeyAttempts bounds how often Rekey re-encrypts one tenant whose URL
// changed between its read and its write.
const rekeyAttempts = 3

// rekeyRow is a row not under the current key.
type rekeyRow struct {
	id       string
	cursorID int64
	enc      sealedURL
}

// Rekey re-encrypts under the cipher's current key the database URL of
// every tenant stored under another key (or before key ids were recorded),
// page by page in cursor order, so that the previous keys can then be
// dropped. It is safe while servers run: each page is one conditional
// UPDATE that writes only database_url and key_id, and only while
// database_url is still the ciphertext it read, so migration state recorded
// meanwhile is kept and a URL changed meanwhile (a PATCH, which encrypts
// under its writer's current key) wins: that tenant is read again and
// counted by what it is now. It is resumable: a stopped run leaves every
// page it finished under the current key, and the next run only finds the
// rest. target_seq does not change (the target is the same), so runs in
// flight still record their results.
//
// A tenant whose URL no configured key decrypts is reported in
// RekeyResult.Failed and left as it is; the others are still rekeyed.
// Rekey returns an error only when the control plane fails, with the counts
// of what it did before, and ErrNoEncryptionKey without a cipher.
func (s *Store) Rekey(ctx context.Context, opts RekeyOptions) (RekeyResult, error) {
	var res RekeyResult
	if s.cipher == nil {
		return res, fmt.Errorf("rekey tenants: %w", ErrNoEncryptionKey)
	}
	current := s.cipher.KeyID()
	limit := DefaultRekeyPageSize
	if opts.PageSize > 0 {
		limit = min(opts.PageSize, MaxPageSize)
	}
	var after int64
	for {
		rows, currentInPage, err := s.rekeyPage(ctx, current, after, limit)
		if err != nil {
			return res, fmt.Errorf("rekey tenants: read tenants after cursor %d: %w", after, err)
		}
		res.AlreadyCurrent += currentInPage
		if len(rows) == 0 {
			return res, nil
		}
		after = rows[len(rows)-1].cursorID

		// Decrypt and re-encrypt in memory; a row no key opens fails alone.
		var ids []string
		var olds, news [][]byte
		for _, r := range rows {
			plain, err := s.cipher.Decrypt(r.enc.keyID, r.enc.b)
			if err != nil {
				res.Failed = append(res.Failed, RekeyFailure{TenantID: r.id, Err: fmt.Errorf("tenant %s: %w", r.id, err)})
				continue
			}
			if opts.DryRun {
				res.Rekeyed++
				continue
			}
			b, err := s.cipher.Encrypt(plain)
			if err != nil {
				return res, fmt.Errorf("rekey tenants: tenant %s: %w", r.id, err)
			}
			ids, olds, news = append(ids, r.id), append(olds, r.enc.b), append(news, b)
		}

		if len(ids) > 0 {
			done, err := s.rekeyWrite(ctx, current, ids, olds, news)
			if err != nil {
				return res, fmt.Errorf("rekey tenants: write tenants after cursor %d: %w", after, err)
			}
			res.Rekeyed += len(done)
			// A row not written was held by another writer, or changed (or
			// went) since it was read.
			for _, id := range ids {
				if done[id] {
					continue
				}
				if err := s.rekeyOne(ctx, id, &res); err != nil {
					return res, fmt.Errorf("rekey tenants: tenant %s: %w", id, err)
				}
			}
		}
		if opts.OnPage != nil {
			// Clipped: an append of the callback's does not write into
			// the slice Rekey goes on appending to.
			opts.OnPage(RekeyResult{Rekeyed: res.Rekeyed, AlreadyCurrent: res.AlreadyCurrent, Failed: slices.Clip(res.Failed)})
		}
	}
}

// rekeyPage reads up to limit rows after cursor after that are not under the
// key current, and counts the rows under it in the same cursor range (to the
// end when the page is empty), in one snapshot: every row is counted once,
// as it was when its page was read, also while others write.
func (s *Store) rekeyPage(ctx context.Context, current string, after int64, limit int) (page []rekeyRow, currentInRange int, err error) {
	err = pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			SELECT id, cursor_id, database_url, coalesce(key_id, '') FROM tenantmigrate.tenants
			WHERE cursor_id > $1 AND key_id IS DISTINCT FROM $2
			ORDER BY cursor_id LIMIT $3`, after, current, limit)
		if err != nil {
			return err
		}
		var r rekeyRow
		if _, err := pgx.ForEachRow(rows, []any{&r.id, &r.cursorID, &r.enc.b, &r.enc.keyID}, func() error {
			page = append(page, r)
			r = rekeyRow{} // the next Scan must not reuse the byte slice
			return nil
		}); err != nil {
			return err
		}
		upTo := int64(math.MaxInt64)
		if len(page) > 0 {
			upTo = page[len(page)-1].cursorID
		}
		return tx.QueryRow(ctx, `SELECT count(*) FROM tenantmigrate.tenants
			WHERE cursor_id > $1 AND cursor_id <= $2 AND key_id = $3`, after, upTo, current).Scan(&currentInRange)
	})
	return page, currentInRange, err
}

// rekeyWrite sets database_url to news[i] under the key current for each
// tenant ids[i] whose database_url is still olds[i], in one statement, and
// returns the ids written. Only database_url and key_id change. Rows another
// transaction holds are skipped (SKIP LOCKED), not waited for: a statement
// that locks many rows while it waits for one could deadlock with another
// writer of several tenants; the caller does the skipped ones one by one.
func (s *Store) rekeyWrite(ctx context.Context, current string, ids []string, olds, news [][]byte) (map[string]bool, error) {
	rows, err := s.pool.Query(ctx, `
		WITH free AS (
			SELECT id FROM tenantmigrate.tenants WHERE id = ANY($2) FOR UPDATE SKIP LOCKED
		)
		UPDATE tenantmigrate.tenants AS t SET database_url = u.new_url, key_id = $1
		FROM unnest($2::text[], $3::bytea[], $4::bytea[]) AS u(id, old_url, new_url)
		WHERE t.id = u.id AND t.id IN (SELECT id FROM free) AND t.database_url = u.old_url
		RETURNING t.id`, current, ids, olds, news)
	if err != nil {
		return nil, err
	}
	done := make(map[string]bool, len(ids))
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		done[id] = true
		return nil
	})
	return done, err
}

// rekeyOne re-encrypts tenant id, which the page's write skipped (held by
// another transaction, or changed since the page was read): it reads it
// again and counts it by what it is now (gone: not counted; under the
// current key: already current), up to rekeyAttempts times. It holds one
// row lock at a time, so it may wait without risk of a deadlock.
func (s *Store) rekeyOne(ctx context.Context, id string, res *RekeyResult) error {
	current := s.cipher.KeyID()
	for range rekeyAttempts {
		var enc sealedURL
		err := s.pool.QueryRow(ctx, `SELECT database_url, coalesce(key_id, '') FROM tenantmigrate.tenants WHERE id = $1`,
			id).Scan(&enc.b, &enc.keyID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		if enc.keyID == current {
			res.AlreadyCurrent++ // its writer used the current key
			return nil
		}
		plain, err := s.cipher.Decrypt(enc.keyID, enc.b)
		if err != nil {
			res.Failed = append(res.Failed, RekeyFailure{TenantID: id, Err: fmt.Errorf("tenant %s: %w", id, err)})
			return nil
		}
		b, err := s.cipher.Encrypt(plain)
		if err != nil {
			return err
		}
		tag, err := s.pool.Exec(ctx, `
			UPDATE tenantmigrate.tenants SET database_url = $3, key_id = $4
			WHERE id = $1 AND database_url = $2`, id, enc.b, b, current)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			res.Rekeyed++
			return nil
		}
	}
	res.Failed = append(res.Failed, RekeyFailure{TenantID: id,
		Err: fmt.Errorf("tenant %s: its URL changed %d times while it was being re-encrypted; run rekey again", id, rekeyAttempts)})
	return nil
}
