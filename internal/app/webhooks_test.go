package app_test

import (
	"errors"
	"testing"

	"github.com/linkhop/linkhop/config"
	"github.com/linkhop/linkhop/internal/app"
	"github.com/linkhop/linkhop/webhooks"
)

// TestWebhookPolicy: WEBHOOK_MAX_RETRIES has one meaning from the environment to the policy
// (docs/configuration.md#variables: 0 is no retries), the defaults are the webhooks package's,
// and a policy Validate refuses stops the process as bad configuration.
func TestWebhookPolicy(t *testing.T) {
	t.Parallel()
	load := func(env map[string]string) config.Config {
		t.Helper()
		c, err := config.Load(config.Worker, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	p, err := app.WebhookPolicy(load(nil))
	if err != nil {
		t.Fatal(err)
	}
	if p != webhooks.DefaultPolicy() {
		t.Errorf("policy of an empty environment %+v, want webhooks.DefaultPolicy() %+v", p, webhooks.DefaultPolicy())
	}
	p, err = app.WebhookPolicy(load(map[string]string{"WEBHOOK_MAX_RETRIES": "0"}))
	if err != nil || p.Retries() != 0 {
		t.Errorf("WEBHOOK_MAX_RETRIES=0: %d retries (%v), want none", p.Retries(), err)
	}
	c := load(nil)
	c.WebhookMaxRetries = -1
	var ce *config.Error
	if _, err := app.WebhookPolicy(c); !errors.As(err, &ce) {
		t.Errorf("a negative retry count: %v, want a *config.Error", err)
	}
}
