package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// StoredResponse is a Responses API object kept for GET /v1/responses/{id}, its input items
// and previous_response_id chaining. Response and InputItems are JSON kept byte for byte:
// the response object as the client saw it, and the effective input (inherited conversation
// plus the request's own items, without instructions) as a JSON array.
type StoredResponse struct {
	ID          string
	WorkspaceID string
	Response    []byte
	InputItems  []byte
	CreatedAt   time.Time
	ExpiresAt   time.Time
}

func (r *StoredResponse) validate() error {
	switch {
	case r.ID == "" || r.WorkspaceID == "":
		return fmt.Errorf("%w: stored response needs an id and a workspace", ErrInvalid)
	case len(r.Response) == 0 || len(r.InputItems) == 0:
		return fmt.Errorf("%w: stored response needs its response and input items", ErrInvalid)
	case !r.ExpiresAt.After(r.CreatedAt):
		return fmt.Errorf("%w: stored response expires before it was created", ErrInvalid)
	}
	return nil
}

// PutResponse stores (or replaces) a response. An id held by another workspace is left alone
// and reported as ErrInvalid: ids are random, so that is a bug, never a second owner.
func (s *SQLite) PutResponse(ctx context.Context, r StoredResponse) error {
	if err := r.validate(); err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO stored_responses (id, workspace_id, response, input_items, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET response = excluded.response, input_items = excluded.input_items,
			created_at = excluded.created_at, expires_at = excluded.expires_at
		WHERE stored_responses.workspace_id = excluded.workspace_id`,
		r.ID, r.WorkspaceID, r.Response, r.InputItems, toUs(r.CreatedAt), toUs(r.ExpiresAt))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("%w: response id %s belongs to another workspace", ErrInvalid, r.ID)
	}
	return nil
}

// GetResponse returns the workspace's unexpired response, or ErrNotFound (also for another
// workspace's id).
func (s *SQLite) GetResponse(ctx context.Context, ws, id string) (StoredResponse, error) {
	r := StoredResponse{ID: id, WorkspaceID: ws}
	var created, expires int64
	err := s.r.QueryRowContext(ctx, `SELECT response, input_items, created_at, expires_at FROM stored_responses
		WHERE id = ? AND workspace_id = ? AND expires_at > ?`, id, ws, toUs(time.Now())).
		Scan(&r.Response, &r.InputItems, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return StoredResponse{}, ErrNotFound
	}
	if err != nil {
		return StoredResponse{}, err
	}
	r.CreatedAt, r.ExpiresAt = fromUs(created), fromUs(expires)
	return r, nil
}

// DeleteResponse deletes the workspace's unexpired response, or returns ErrNotFound.
func (s *SQLite) DeleteResponse(ctx context.Context, ws, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM stored_responses WHERE id = ? AND workspace_id = ? AND expires_at > ?`,
		id, ws, toUs(time.Now()))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return ErrNotFound
	}
	return err
}

// PurgeResponses deletes every response that expired at or before now.
func (s *SQLite) PurgeResponses(ctx context.Context, now time.Time) (int64, error) {
	res, err := s.w.ExecContext(ctx, `DELETE FROM stored_responses WHERE expires_at <= ?`, toUs(now))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// PutResponse stores (or replaces) a response; see SQLite.PutResponse.
func (p *Postgres) PutResponse(ctx context.Context, r StoredResponse) error {
	if err := r.validate(); err != nil {
		return err
	}
	tag, err := p.pool.Exec(ctx, `INSERT INTO stored_responses (id, workspace_id, response, input_items, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (id) DO UPDATE SET response = excluded.response, input_items = excluded.input_items,
			created_at = excluded.created_at, expires_at = excluded.expires_at
		WHERE stored_responses.workspace_id = excluded.workspace_id`,
		r.ID, r.WorkspaceID, string(r.Response), string(r.InputItems), r.CreatedAt, r.ExpiresAt)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: response id %s belongs to another workspace", ErrInvalid, r.ID)
	}
	return nil
}

// GetResponse returns the workspace's unexpired response; see SQLite.GetResponse.
func (p *Postgres) GetResponse(ctx context.Context, ws, id string) (StoredResponse, error) {
	r := StoredResponse{ID: id, WorkspaceID: ws}
	var resp, items string
	err := p.pool.QueryRow(ctx, `SELECT response, input_items, created_at, expires_at FROM stored_responses
		WHERE id = $1 AND workspace_id = $2 AND expires_at > $3`, id, ws, time.Now()).
		Scan(&resp, &items, &r.CreatedAt, &r.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return StoredResponse{}, ErrNotFound
	}
	if err != nil {
		return StoredResponse{}, err
	}
	r.Response, r.InputItems = []byte(resp), []byte(items)
	r.CreatedAt, r.ExpiresAt = r.CreatedAt.UTC(), r.ExpiresAt.UTC()
	return r, nil
}

// DeleteResponse deletes the workspace's unexpired response, or returns ErrNotFound.
func (p *Postgres) DeleteResponse(ctx context.Context, ws, id string) error {
	tag, err := p.pool.Exec(ctx, `DELETE FROM stored_responses WHERE id = $1 AND workspace_id = $2 AND expires_at > $3`,
		id, ws, time.Now())
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// PurgeResponses deletes every response that expired at or before now.
func (p *Postgres) PurgeResponses(ctx context.Context, now time.Time) (int64, error) {
	tag, err := p.pool.Exec(ctx, `DELETE FROM stored_responses WHERE expires_at <= $1`, now)
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}
