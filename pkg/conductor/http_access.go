package conductor

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/conductor-run/conductor/internal/auth"
)

// The HTTP API's half of access.go: every route but GET / and GET
// /healthz names the least role that may call it (Handler), and the
// routes of a job type check the caller's types (mayType).

type principalKey struct{}

// auth lets through to h the callers whose bearer token proves role (or
// a role above it), with their principal in the request's context; 401
// for no or a wrong token, 403 for a role below.
func (c *Conductor) auth(role auth.Role, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		tok, bearer := strings.CutPrefix(header, "Bearer ")
		p, ok := c.access.check(tok)
		if !ok || header != "" && !bearer {
			w.Header().Set("WWW-Authenticate", `Bearer realm="conductor"`)
			writeError(w, http.StatusUnauthorized, "missing or wrong token: send Authorization: Bearer TOKEN")
			return
		}
		if p.cred.Namespace != "" {
			writeError(w, http.StatusForbidden, fmt.Sprintf("credential %s is for namespace %s: this is namespace %s's conductord", p.cred.ID, p.cred.Namespace, c.cfg.Namespace))
			return
		}
		if !p.cred.May(role) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("credential %s (%s) may not do this: it needs the %s role", p.cred.ID, p.cred.Role, role))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// caller is the principal auth let through.
func caller(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// mayType reports whether the caller may queue, read or cancel jobs of
// type typ; if not, it answers 403.
func mayType(w http.ResponseWriter, r *http.Request, typ string) bool {
	p := caller(r)
	if p.cred.AllowsType(typ) {
		return true
	}
	writeError(w, http.StatusForbidden, fmt.Sprintf("credential %s may not use job type %q", p.cred.ID, typ))
	return false
}

// seesType reports whether the caller may see a job of type typ: one it
// may not is not found, so that its id tells nothing.
func seesType(r *http.Request, typ string) bool { return caller(r).cred.AllowsType(typ) }
