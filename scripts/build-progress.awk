#!/usr/bin/awk -f
# Reads `go build -v` (stdout and stderr) and says it briefly, for `make
# run`: each binary of this module as it compiles, a count of the other
# packages every 50, and every other line (downloads, errors) as it is.
/^[^ :]+$/ {
	n++
	if ($0 ~ /conductor-run\/conductor\/(cmd|examples)\//) {
		print "  compiled " $0
	} else if (n % 50 == 0) {
		print "  ... " n " packages compiled"
	}
	fflush()
	next
}
{ print; fflush() }
END { if (n > 0) print "  " n " packages compiled" }
