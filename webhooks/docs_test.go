package webhooks

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The verification snippets of docs/webhooks.md are code people copy: run the Node.js and
// Python ones against the signature vectors (valid, tampered, stale, wrong secret) whenever
// the interpreter is installed. PHP is not run here; its snippet mirrors the Python one.
func TestDocSnippets(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/webhooks.md")
	if err != nil {
		t.Fatal(err)
	}
	vectors, err := filepath.Abs("testdata/signature-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, interpreter, lang, marker, harness, ext string
	}{
		{"node", "node", "js", "function verifyLinkhop", nodeHarness, ".js"},
		{"python", "python3", "python", "def verify_linkhop", pythonHarness, ".py"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			snippet := codeBlock(t, string(doc), tt.lang, tt.marker)
			bin, err := exec.LookPath(tt.interpreter)
			if err != nil {
				t.Skipf("%s not installed", tt.interpreter)
			}
			file := filepath.Join(t.TempDir(), "verify"+tt.ext)
			if err := os.WriteFile(file, []byte(snippet+"\n"+tt.harness), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, file, vectors).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "checks passed") {
				t.Fatalf("%s: %v\n%s", tt.interpreter, err, out)
			}
		})
	}
}

// codeBlock returns the fenced block of language lang that contains marker.
func codeBlock(t *testing.T, doc, lang, marker string) string {
	t.Helper()
	re := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```")
	for _, m := range re.FindAllStringSubmatch(doc, -1) {
		if strings.Contains(m[1], marker) {
			return m[1]
		}
	}
	t.Fatalf("docs/webhooks.md has no %s block with %q", lang, marker)
	return ""
}

const nodeHarness = `
const vectors = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8")).vectors;
const wrongSecret = "whsec_" + Buffer.alloc(32).toString("base64");
let failures = 0, checks = 0;
function check(name, got, want) {
  checks++;
  if (got !== want) { console.log("FAIL " + name + ": got " + got); failures++; }
}
for (const v of vectors) {
  const now = v.timestamp + 60;
  const headers = { "webhook-id": v.msg_id, "webhook-timestamp": String(v.timestamp), "webhook-signature": v.webhook_signature };
  for (const body of [Buffer.from(v.body, "utf8"), v.body]) {
    for (const s of v.secrets) {
      check(v.name + " linkhop", verifyLinkhop(s, v.linkhop_signature, body, now), true);
      check(v.name + " standard", verifyStandard(s, headers, body, now), true);
      check(v.name + " linkhop stale", verifyLinkhop(s, v.linkhop_signature, body, v.timestamp + 301), false);
      check(v.name + " standard stale", verifyStandard(s, headers, body, v.timestamp - 301), false);
    }
    check(v.name + " linkhop wrong secret", verifyLinkhop(wrongSecret, v.linkhop_signature, body, now), false);
    check(v.name + " standard wrong secret", verifyStandard(wrongSecret, headers, body, now), false);
  }
  const tampered = Buffer.from(v.body.replace("resolve.", "resolve_"), "utf8");
  check(v.name + " linkhop tampered", verifyLinkhop(v.secrets[0], v.linkhop_signature, tampered, now), false);
  check(v.name + " standard tampered", verifyStandard(v.secrets[0], headers, tampered, now), false);
  check(v.name + " linkhop garbage", verifyLinkhop(v.secrets[0], "t=abc,v1=zz", tampered, now), false);
  check(v.name + " standard other id", verifyStandard(v.secrets[0], { ...headers, "webhook-id": "msg_other" }, Buffer.from(v.body), now), false);
}
if (failures) process.exit(1);
console.log(checks + " checks passed");
`

const pythonHarness = `
import json, sys
vectors = json.load(open(sys.argv[1], encoding="utf-8"))["vectors"]
wrong_secret = "whsec_" + base64.b64encode(bytes(32)).decode()
failures = checks = 0
def check(name, got, want):
    global failures, checks
    checks += 1
    if got is not want:
        print("FAIL", name, "got", got)
        failures += 1
for v in vectors:
    now = v["timestamp"] + 60
    body = v["body"].encode("utf-8")
    headers = {"webhook-id": v["msg_id"], "webhook-timestamp": str(v["timestamp"]), "webhook-signature": v["webhook_signature"]}
    for s in v["secrets"]:
        check(v["name"] + " linkhop", verify_linkhop(s, v["linkhop_signature"], body, now), True)
        check(v["name"] + " standard", verify_standard(s, headers, body, now), True)
        check(v["name"] + " linkhop stale", verify_linkhop(s, v["linkhop_signature"], body, v["timestamp"] + 301), False)
        check(v["name"] + " standard stale", verify_standard(s, headers, body, v["timestamp"] - 301), False)
    check(v["name"] + " linkhop wrong secret", verify_linkhop(wrong_secret, v["linkhop_signature"], body, now), False)
    check(v["name"] + " standard wrong secret", verify_standard(wrong_secret, headers, body, now), False)
    tampered = v["body"].replace("resolve.", "resolve_").encode("utf-8")
    check(v["name"] + " linkhop tampered", verify_linkhop(v["secrets"][0], v["linkhop_signature"], tampered, now), False)
    check(v["name"] + " standard tampered", verify_standard(v["secrets"][0], headers, tampered, now), False)
    check(v["name"] + " linkhop garbage", verify_linkhop(v["secrets"][0], "t=abc,v1=\u00e9", body, now), False)
    check(v["name"] + " standard other id", verify_standard(v["secrets"][0], dict(headers, **{"webhook-id": "msg_other"}), body, now), False)
if failures:
    sys.exit(1)
print(checks, "checks passed")
`
