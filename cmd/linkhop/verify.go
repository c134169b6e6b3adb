package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/linkhop/linkhop/webhooks"
)

const verifyHelp = `Usage: linkhop verify-webhook --secret whsec_… (--header VALUE | --standard ID,TIMESTAMP,SIGNATURE) < body

Checks the signature of a webhook delivery (docs/webhooks.md) over the raw body read from
standard input, exactly as received. Give one scheme:

  --header VALUE          the value of the Linkhop-Signature (or X-LinkSkipper-Signature)
                          header: t=<unix>,v1=<hex>
  --standard ID,TIMESTAMP,SIGNATURE
                          the Standard Webhooks headers webhook-id, webhook-timestamp and
                          webhook-signature, joined with commas (the signature keeps its
                          own commas and spaces: v1,<base64>)

The secret is --secret or $LINKHOP_WEBHOOK_SECRET. The timestamp must be within 5 minutes
of this machine's clock.

Prints "valid" and exits 0 when the signature is good; prints "invalid" (and why on
standard error) and exits 1 otherwise; exits 2 for usage errors.
`

// maxWebhookBody bounds the body read from standard input; linkhop's events are a few
// hundred bytes.
const maxWebhookBody = 1 << 20

func (c *cli) verifyWebhook(args []string) int {
	cmd := newCommand("verify-webhook", verifyHelp)
	secret := cmd.fs.String("secret", "", "the key's webhook secret, whsec_… (default $LINKHOP_WEBHOOK_SECRET)")
	header := cmd.fs.String("header", "", "the Linkhop-Signature header's `VALUE`")
	standard := cmd.fs.String("standard", "", "the Standard Webhooks headers as `ID,TIMESTAMP,SIGNATURE`")
	operands, code, done := c.parse(cmd, args)
	if done {
		return code
	}
	if *secret == "" {
		*secret = c.getenv("LINKHOP_WEBHOOK_SECRET")
	}
	switch {
	case len(operands) > 0:
		fmt.Fprintln(c.stderr, "linkhop verify-webhook: takes no arguments; the body comes on standard input")
		return exitUsage
	case *secret == "":
		fmt.Fprintln(c.stderr, "linkhop verify-webhook: no secret: pass --secret whsec_… or set LINKHOP_WEBHOOK_SECRET")
		return exitUsage
	case (*header == "") == (*standard == ""):
		fmt.Fprintln(c.stderr, "linkhop verify-webhook: give exactly one of --header and --standard")
		return exitUsage
	}
	body, err := io.ReadAll(io.LimitReader(c.stdin, maxWebhookBody+1))
	if err != nil {
		fmt.Fprintf(c.stderr, "linkhop verify-webhook: reading the body: %v\n", err)
		return exitUsage
	}
	if len(body) > maxWebhookBody {
		fmt.Fprintf(c.stderr, "linkhop verify-webhook: the body is over %d bytes\n", maxWebhookBody)
		return exitUsage
	}
	now := time.Now()
	if *header != "" {
		err = webhooks.VerifyLinkhop(*secret, headerValue(*header), body, now)
	} else {
		id, rest, ok1 := strings.Cut(*standard, ",")
		ts, sig, ok2 := strings.Cut(rest, ",")
		if !ok1 || !ok2 {
			fmt.Fprintln(c.stderr, "linkhop verify-webhook: --standard takes ID,TIMESTAMP,SIGNATURE")
			return exitUsage
		}
		h := http.Header{}
		h.Set(webhooks.HeaderWebhookID, strings.TrimSpace(id))
		h.Set(webhooks.HeaderWebhookTimestamp, strings.TrimSpace(ts))
		h.Set(webhooks.HeaderWebhookSignature, strings.TrimSpace(sig))
		err = webhooks.VerifyStandard(*secret, h, body, now)
	}
	if err != nil {
		fmt.Fprintln(c.stdout, "invalid")
		fmt.Fprintf(c.stderr, "linkhop verify-webhook: %v\n", err)
		return exitFailed
	}
	fmt.Fprintln(c.stdout, "valid")
	return exitOK
}

// headerValue accepts the header as copied from a log too: "Linkhop-Signature: t=…".
func headerValue(s string) string {
	s = strings.TrimSpace(s)
	for _, name := range []string{webhooks.HeaderLinkhopSignature, webhooks.HeaderLinkSkipperSignature} {
		if len(s) > len(name) && strings.EqualFold(s[:len(name)], name) && s[len(name)] == ':' {
			return strings.TrimSpace(s[len(name)+1:])
		}
	}
	return s
}
