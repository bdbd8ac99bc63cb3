package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestRollbackProgressBadID: a rollback id that is not UTF-8 text, or
// holds a NUL, is bad input: it names no rollback, so it is a 4xx, never a
// 500 from the control plane refusing the text.
func TestRollbackProgressBadID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, options{})
	for _, id := range []string{"%ff", "a%00b", "%c3%28"} {
		res := e.admin(http.MethodGet, "/admin/rollbacks/"+id, "")
		require.Less(t, res.status, 500, "GET /admin/rollbacks/%s: %d %s", id, res.status, res.body)
	}
}
