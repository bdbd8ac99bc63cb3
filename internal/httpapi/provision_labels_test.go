package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestProvisionLabels: labels sent with provision are either set on
// the tenant or refused, never dropped silently.
func TestProvisionLabels(t *testing.T) {
	t.Parallel()
	e, _ := provisionEnv(t)
	res := e.admin(http.MethodPost, "/admin/tenants/lab", `{"provision": true, "labels": {"tier": "gold", "server": "db9"}}`)
	if res.status == http.StatusCreated {
		require.Equal(t, map[string]any{"tier": "gold", "server": "db9"}, res.json(t)["labels"], "body: %s", res.body)
		return
	}
	require.Equal(t, http.StatusBadRequest, res.status, "body: %s", res.body)
}
