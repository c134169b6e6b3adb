package httpapi

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"

	"github.com/linkhop/linkhop/jobs"
)

// TestQueuedMatchesEncoding: the 202 answer of POST /v1/resolve, written by hand, is byte for
// byte what writeJSON gave for queuedResponse (encoding/json, its HTML escaping, the final
// newline), with the same headers.
func TestQueuedMatchesEncoding(t *testing.T) {
	t.Parallel()
	s := &Server{}
	for _, id := range []string{uuid.NewString(), "plain_id.1", "", "a<b>&c", `q"uote\`, "é\u2028", "tab\t", "\xff"} {
		for _, pos := range []int64{0, 1, 42, -1, math.MaxInt64, math.MinInt64} {
			want := httptest.NewRecorder()
			want.Header().Set("Location", "/v1/jobs/"+id)
			writeJSON(want, 202, queuedResponse{JobID: id, Status: string(jobs.StatusQueued), QueuePosition: pos, PollURL: "/v1/jobs/" + id})
			got := httptest.NewRecorder()
			s.writeQueued(got, id, pos)
			if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) || got.Code != want.Code {
				t.Errorf("%q %d:\n got %d %s\nwant %d %s", id, pos, got.Code, got.Body.Bytes(), want.Code, want.Body.Bytes())
			}
			gh, _ := json.Marshal(got.Header())
			wh, _ := json.Marshal(want.Header())
			if !bytes.Equal(gh, wh) {
				t.Errorf("%q: headers %s, want %s", id, gh, wh)
			}
		}
	}
}
