package jobs

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestTaskMessagesMatchResolveTaskMessage: the messages a batch writes by copying the first one
// with another id are resolveTaskMessage's, byte for byte, for ids of the first's length and
// for any other id (which is encoded in full).
func TestTaskMessagesMatchResolveTaskMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opts := TaskOptions{MaxAttempts: 3, Timeout: 90 * time.Second}
	for _, first := range []string{uuid.NewString(), "j1", "a<b", ""} {
		var tm taskMessages
		ids := []string{first, uuid.NewString(), uuid.NewString(), "j2", "x", `q"uote`, "é-accent", uuid.NewString()[:35] + "<", uuid.NewString()}
		var buf []byte
		for _, id := range ids {
			got, err := tm.append(ctx, buf[:0], id, "key_m", opts)
			if err != nil {
				t.Fatal(err)
			}
			buf = got
			want, err := resolveTaskMessage(ctx, id, "key_m", opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("first %q, id %q:\n got %q\nwant %q", first, id, got, want)
			}
		}
		if len(first) == 36 && !tm.templating {
			t.Errorf("first %q: the messages were not copied", first)
		}
	}
}
