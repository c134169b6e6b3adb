#!/usr/bin/env bash
# Runs every Go fuzz target of the module for FUZZTIME each (make fuzz-short / make fuzz).
#
# A finding fails the run only if it reproduces: Go's fuzzing engine occasionally loses a worker
# process ("fuzzing process hung or terminated unexpectedly"), for example while minimising an
# input on a loaded 2-core machine, and then records whatever input the worker held. Such an
# input is re-run as an ordinary test; if it passes, the engine hiccup is reported and the input
# discarded, and if it fails, the run fails with the input kept under testdata/fuzz for review.
# A failure that records no input at all (the engine missing its own deadline) is retried once.
set -uo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-5s}
status=0
# Every package's fuzz targets in one listing (one build of all test binaries, in parallel):
# `go test -list` prints a package's names, then its "ok <package>" line.
targets=$($GO test -list '^Fuzz' ./... 2>/dev/null | awk '/^Fuzz/ { names = names " " $1; next }
	/^ok[ \t]/ { if (names != "") print $2 names; names = ""; next }
	{ names = "" }')
while read -r pkg fuzzes; do
	[ -n "$pkg" ] || continue
	dir=$($GO list -f '{{.Dir}}' "$pkg")
	for f in $fuzzes; do
		echo "fuzz $pkg $f ($FUZZTIME)"
		before=$(ls "$dir/testdata/fuzz/$f" 2>/dev/null)
		out=$($GO test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 10s "$pkg" 2>&1)
		if [ $? -eq 0 ]; then
			continue
		fi
		found=""
		for input in $(ls "$dir/testdata/fuzz/$f" 2>/dev/null); do
			grep -qx "$input" <<<"$before" || found="$found $input"
		done
		if [ -z "$found" ]; then
			# No input recorded: the engine itself failed (on a loaded machine its coordinator
			# can miss a deadline: "context deadline exceeded"). Run the target once more; only
			# a second failure counts.
			if $GO test -run '^$' -fuzz "^$f\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 10s "$pkg" >/dev/null 2>&1; then
				echo "  engine hiccup, not a finding (no input recorded; a second run passed): $f"
				continue
			fi
			echo "$out" | grep -v '^fuzz: elapsed' | tail -20
			status=1
			continue
		fi
		for input in $found; do
			if $GO test -count=1 -run "^$f/$input\$" "$pkg" >/dev/null 2>&1; then
				echo "  engine hiccup, not a finding (the recorded input passes when re-run): $f/$input"
				rm -f "$dir/testdata/fuzz/$f/$input"
			else
				echo "$out" | grep -v '^fuzz: elapsed' | tail -20
				echo "  FINDING: $pkg $f/$input fails when re-run; kept in testdata/fuzz/$f"
				status=1
			fi
		done
		rmdir "$dir/testdata/fuzz/$f" "$dir/testdata/fuzz" "$dir/testdata" 2>/dev/null
	done
done <<<"$targets"
exit $status
