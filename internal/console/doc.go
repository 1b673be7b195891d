// Package console is the operator's dashboard that conductord serves at
// "/": a page of plain HTML, CSS and JavaScript modules, embedded in the
// binary (no build step, nothing fetched from elsewhere), and its static
// handler. The page reads everything it shows from the HTTP API of the
// same origin, with the token the operator types in (docs/console.md);
// this package holds no data and checks no token.
package console
