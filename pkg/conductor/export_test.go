package conductor

// StrayPass is what one pass of the stray repair found and did.
type StrayPass struct{ Found, Deleted, Requeued, Skipped int }

// OnStrayPass sets fn to be told of each pass of c's stray repair (a test
// signal); call it between New and Start.
func OnStrayPass(c *Conductor, fn func(StrayPass)) {
	c.onStrayPass = func(p strayPass) {
		fn(StrayPass{Found: p.found, Deleted: p.deleted, Requeued: p.requeued, Skipped: p.skipped})
	}
}
