#!/usr/bin/env bash
# Checks the CPU ratios of `make bench` rows 2 (accepted POST /v1/resolve vs the floor) and 3
# (GET /v1/jobs/{id} vs a bare handler) with a standard load tool, vegeta, against built
# binaries: cmd/api, and the bench program's reference servers (`bench -serve floor|poll-ref`).
# Each server is a process of its own, so its CPU (utime+stime from /proc/PID/stat) is the
# server's alone; redis-server's is added, as the bench does. See docs/benchmarks.md
# "Checked with a standard load tool".
#
#   bash scripts/vegeta-check.sh            # ROUNDS=3 DURATION=10 (seconds) WORKERS=16
#
# Everything listens on free loopback ports and is stopped at exit. Needs Linux (/proc),
# redis-server, curl and Go; vegeta is installed into a temporary directory unless VEGETA names
# a vegeta binary. Each round runs both sides of a comparison, alternating which goes first.
set -euo pipefail
GO=${GO:-go}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10} # seconds per side per round
WORKERS=${WORKERS:-16}
KEYS=${KEYS:-256} # API keys the load is spread over, as in the bench

tmp=$(mktemp -d)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

# free_port picks a loopback port nothing listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# wait_port waits until something listens on the loopback port $1.
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	return 1
}

echo "building cmd/api and bench" >&2
$GO build -o "$tmp/api" ./cmd/api
$GO build -o "$tmp/bench" ./bench
VEGETA=${VEGETA:-}
if [ -z "$VEGETA" ]; then
	echo "installing vegeta v12.13.0 into a temporary directory" >&2
	GOBIN="$tmp" GOFLAGS=-mod=mod $GO install github.com/tsenart/vegeta/v12@v12.13.0
	VEGETA="$tmp/vegeta"
fi

rport=$(free_port)
redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no --logfile "" >"$tmp/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
wait_port "$rport"
export REDIS_URL="redis://127.0.0.1:$rport/0" LOG_LEVEL=error

admin=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
aport=$(free_port)
HTTP_ADDR="127.0.0.1:$aport" LINKHOP_ADMIN_TOKEN="$admin" "$tmp/api" 2>"$tmp/api.log" &
api_pid=$!
pids+=("$api_pid")
wait_port "$aport"
fport=$(free_port)
"$tmp/bench" -serve floor -addr "127.0.0.1:$fport" 2>"$tmp/floor.log" &
floor_pid=$!
pids+=("$floor_pid")
pport=$(free_port)
"$tmp/bench" -serve poll-ref -addr "127.0.0.1:$pport" 2>"$tmp/poll-ref.log" &
pollref_pid=$!
pids+=("$pollref_pid")
wait_port "$fport"
wait_port "$pport"

# Keys with a limit never reached but not 0 (unlimited), so that every request pays for the
# real sliding-window log, as in the bench; one queued job per key to poll.
echo "creating $KEYS keys and one queued job each" >&2
b64() { printf '%s' "$1" | base64 | tr -d '\n'; }
: >"$tmp/submit.json" >"$tmp/floor.json" >"$tmp/poll.json" >"$tmp/poll-ref.json"
for i in $(seq "$KEYS"); do
	key=$(curl -sf -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
		-d "{\"name\":\"vegeta-$i\",\"rate_limit_per_minute\":100000000}" "http://127.0.0.1:$aport/admin/keys" |
		sed -E 's/.*"key":"([^"]+)".*/\1/')
	body=$(b64 "{\"url\":\"https://bit.ly/vegeta$i\"}")
	job=$(curl -sf -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
		-d "{\"url\":\"https://bit.ly/poll$i\"}" "http://127.0.0.1:$aport/v1/resolve" |
		sed -E 's/.*"job_id":"([^"]+)".*/\1/')
	hdr="\"Authorization\":[\"Bearer $key\"],\"Content-Type\":[\"application/json\"]"
	echo "{\"method\":\"POST\",\"url\":\"http://127.0.0.1:$aport/v1/resolve\",\"header\":{$hdr},\"body\":\"$body\"}" >>"$tmp/submit.json"
	echo "{\"method\":\"POST\",\"url\":\"http://127.0.0.1:$fport/v1/resolve\",\"header\":{$hdr},\"body\":\"$body\"}" >>"$tmp/floor.json"
	echo "{\"method\":\"GET\",\"url\":\"http://127.0.0.1:$aport/v1/jobs/$job\",\"header\":{$hdr}}" >>"$tmp/poll.json"
	echo "{\"method\":\"GET\",\"url\":\"http://127.0.0.1:$pport/v1/jobs/$job\",\"header\":{$hdr}}" >>"$tmp/poll-ref.json"
done

hz=$(getconf CLK_TCK)
# ticks prints the user+system CPU ticks of process $1 so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# attack runs one side: targets $1 against server process $2; prints "requests ok cpu_us".
attack() {
	local s0 r0 s1 r1 ok
	s0=$(ticks "$2")
	r0=$(ticks "$redis_pid")
	"$VEGETA" attack -format json -targets "$1" -rate 0 -max-workers "$WORKERS" -duration "${DURATION}s" >"$tmp/out.bin"
	s1=$(ticks "$2")
	r1=$(ticks "$redis_pid")
	"$VEGETA" report -type json "$tmp/out.bin" >"$tmp/report.json"
	ok=$(sed -E 's/.*"status_codes":\{([^}]*)\}.*/\1/' "$tmp/report.json" | tr ',' '\n' |
		awk -F: '$1 ~ /"2[0-9][0-9]"/ {n += $2} END {print n + 0}')
	echo "$ok $(((s1 - s0) * 1000000 / hz)) $(((r1 - r0) * 1000000 / hz))"
}

# compare runs ROUNDS alternating rounds of linkhop (targets $2, process $3) and the reference
# (targets $4, process $5) and prints the CPU per request of each and the ratio.
compare() {
	local name=$1 a=(0 0 0) b=(0 0 0) r out
	for r in $(seq "$ROUNDS"); do
		for side in $([ $((r % 2)) -eq 1 ] && echo "ours ref" || echo "ref ours"); do
			if [ "$side" = ours ]; then
				read -r -a out <<<"$(attack "$2" "$3")"
				a=($((a[0] + out[0])) $((a[1] + out[1])) $((a[2] + out[2])))
			else
				read -r -a out <<<"$(attack "$4" "$5")"
				b=($((b[0] + out[0])) $((b[1] + out[1])) $((b[2] + out[2])))
			fi
			echo "  round $r $side: ${out[0]} ok, server ${out[1]} µs, redis ${out[2]} µs of CPU" >&2
		done
	done
	awk -v secs="$((ROUNDS * DURATION))" -v n="$name" -v an="${a[0]}" -v ag="${a[1]}" -v ar="${a[2]}" -v bn="${b[0]}" -v bg="${b[1]}" -v br="${b[2]}" 'BEGIN {
		if (an == 0 || bn == 0) { print n ": no successful requests"; exit 1 }
		printf "%s: linkhop %.0f/s, CPU/req server %.0f µs + Redis %.0f µs; reference %.0f/s, server %.0f µs + Redis %.0f µs; CPU ratio %.2fx\n",
			n, an / secs, ag / an, ar / an, bn / secs, bg / bn, br / bn, ((bg + br) / bn) / ((ag + ar) / an)
	}'
}

echo "POST /v1/resolve vs the floor, $ROUNDS x ${DURATION}s each, $WORKERS workers" >&2
compare "POST /v1/resolve vs floor" "$tmp/submit.json" "$api_pid" "$tmp/floor.json" "$floor_pid"
echo "GET /v1/jobs/{id} vs bare handler, $ROUNDS x ${DURATION}s each, $WORKERS workers" >&2
compare "GET /v1/jobs/{id} vs bare handler" "$tmp/poll.json" "$api_pid" "$tmp/poll-ref.json" "$pollref_pid"
