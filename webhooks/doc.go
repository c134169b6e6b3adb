// Package webhooks signs, sends and paces the webhook deliveries of linkhop (docs/webhooks.md).
//
// A job submitted with a webhook_url gets one event when it becomes terminal. This package
// holds everything about that event that does not depend on asynq or the job record:
//
//   - [Event], the delivered body, and [State], the job's "webhook" object;
//   - [Sign], which adds both signature schemes to a request — the Link Skipper scheme
//     (Linkhop-Signature / X-LinkSkipper-Signature: t=…,v1=<hex>) and Standard Webhooks
//     (webhook-id, webhook-timestamp, webhook-signature: v1,<base64>) — and the matching
//     [VerifyLinkhop] and [VerifyStandard] for Go receivers;
//   - [Policy], the retry schedule (base × 4^(n−1) ± 20 %), and [Policy.Apply], which turns
//     one attempt's [Outcome] into the next [State];
//   - [Sender], which makes one attempt: POST, redirects not followed, a whole-attempt
//     timeout, the response read up to 64 KiB and discarded, Retry-After honoured;
//   - [RateLimiter], the exact per-URL "at most N attempts in any second" log in Redis,
//     shared by every worker process;
//   - [Metrics], the Prometheus collectors of deliveries.
//
// The asynq task that ties these together lives in package jobs, so that asynq types stay
// out of this package.
package webhooks
