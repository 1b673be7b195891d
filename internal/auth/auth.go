// Package auth holds conductor's credentials: the roles, the tokens that
// name a credential, and the file conductord keeps them in
// (docs/security.md, "Roles and credentials"). It links no NATS: what a
// role may do on NATS is pkg/conductor's (grants.go), on HTTP the API's.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/conductor-run/conductor/internal/subject"
	"github.com/conductor-run/conductor/internal/token"
)

// Role is what a credential may do.
type Role string

// The roles, from least to most trusted but for Host, which is apart: a
// host runs jobs, and may do nothing else.
const (
	// Submitter queues jobs of its types and reads their states.
	Submitter Role = "submitter"
	// Host is one workerd: it takes, runs and ends jobs of its types,
	// and heartbeats and answers commands under its own host id only.
	Host Role = "host"
	// Operator steers: pool commands, dead jobs, cancels, events, logs,
	// and everything a submitter may do, for every type.
	Operator Role = "operator"
	// Admin may do everything, on NATS and HTTP alike.
	Admin Role = "admin"
)

// Roles lists every role.
var Roles = []Role{Submitter, Host, Operator, Admin}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	if r := Role(s); slices.Contains(Roles, r) {
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q: want submitter, host, operator or admin", s)
}

// atLeast reports whether r may do what role may: Admin anything,
// Operator what a Submitter may. Host is no other role's.
func (r Role) atLeast(role Role) bool {
	switch r {
	case Admin:
		return true
	case Operator:
		return role == Operator || role == Submitter
	}
	return r == role
}

// Credential is one credential as the file keeps it: never its secret,
// only the secret's hash.
type Credential struct {
	// ID names the credential.
	ID   string `json:"id"`
	Role Role   `json:"role"`
	// HostID is, for a Host, the host id (workerd --host-id) the
	// credential may heartbeat and answer commands under. Default: ID.
	HostID string `json:"host_id,omitempty"`
	// Types are the job types a Submitter may queue and read, or a Host
	// may take; none: every type. Other roles have every type.
	Types []string `json:"types,omitempty"`
	// Namespace is the namespace the credential is for, when it is not
	// that of the conductord whose file holds it: another conductord's
	// (--namespace, --nats-url) on this conductord's NATS server, in a
	// NATS account of its own. Empty: this conductord's.
	Namespace string `json:"namespace,omitempty"`
	// Hash is the hex SHA-256 of the token's secret.
	Hash    string    `json:"sha256"`
	Created time.Time `json:"created"`
}

// Check reports whether c is a credential the file may hold.
func (c Credential) Check() error {
	if err := token.Check("credential id", c.ID); err != nil {
		return err
	}
	if _, err := ParseRole(string(c.Role)); err != nil {
		return fmt.Errorf("credential %s: %w", c.ID, err)
	}
	if len(c.Types) > MaxTypes {
		return fmt.Errorf("credential %s: %d job types, more than %d", c.ID, len(c.Types), MaxTypes)
	}
	for _, t := range c.Types {
		if err := token.Check("job type", t); err != nil {
			return fmt.Errorf("credential %s: %w", c.ID, err)
		}
	}
	if len(c.Types) > 0 && (c.Role == Admin || c.Role == Operator) {
		return fmt.Errorf("credential %s: an %s has every job type; types are for a submitter or a host", c.ID, c.Role)
	}
	if c.HostID != "" {
		if c.Role != Host {
			return fmt.Errorf("credential %s: a host id is for a host credential", c.ID)
		}
		if err := token.Check("host id", c.HostID); err != nil {
			return fmt.Errorf("credential %s: %w", c.ID, err)
		}
	}
	if c.Namespace != "" {
		if err := token.Check("namespace", c.Namespace); err != nil {
			return fmt.Errorf("credential %s: %w", c.ID, err)
		}
	}
	if b, err := hex.DecodeString(c.Hash); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("credential %s: bad sha256", c.ID)
	}
	return nil
}

// MaxTypes bounds the job types one credential names.
const MaxTypes = 256

// Host returns the host id a Host credential serves under.
func (c Credential) Host() string {
	if c.HostID != "" {
		return c.HostID
	}
	return c.ID
}

// May reports whether c's role may do what role may.
func (c Credential) May(role Role) bool { return c.Role.atLeast(role) }

// AllowsType reports whether c may queue, read or take jobs of type typ.
func (c Credential) AllowsType(typ string) bool {
	return len(c.Types) == 0 || slices.Contains(c.Types, typ)
}

// A token is "cdt.<id>.<secret>", or "cdh.<id>.<secret>" for a host's:
// the id finds the credential, the secret (32 random bytes, base64url)
// proves it. Neither an id nor the base64url alphabet holds a '.', so the
// split is unambiguous. A host's token says so, for a host connects in an
// account of its own, where it reaches JetStream under HostAPIPrefix.
const (
	tokenPrefix     = "cdt."
	hostTokenPrefix = "cdh."
)

// HostAPIPrefix is the JetStream API prefix of a host's connection: its
// account imports the namespace's JetStream API under it.
const HostAPIPrefix = "JS.conductor.API"

// IsHostToken reports whether tok is a host credential's token.
func IsHostToken(tok string) bool {
	_, _, ok := split(tok)
	return ok && strings.HasPrefix(tok, hostTokenPrefix)
}

// secretLen is the length of a secret in a token: 32 bytes in base64url.
var secretLen = base64.RawURLEncoding.EncodedLen(32)

// NewToken returns a new token for credential id of role and the hash its
// credential keeps.
func NewToken(id string, role Role) (tok, hash string, err error) {
	if err := token.Check("credential id", id); err != nil {
		return "", "", err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", fmt.Errorf("credential secret: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(b[:])
	prefix := tokenPrefix
	if role == Host {
		prefix = hostTokenPrefix
	}
	return prefix + id + "." + secret, hashSecret(secret), nil
}

// ID returns the credential id a token names, or "" if tok is not a
// credential's token (a plain shared token, say).
func ID(tok string) string {
	id, _, ok := split(tok)
	if !ok {
		return ""
	}
	return id
}

func split(tok string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		if rest, ok = strings.CutPrefix(tok, hostTokenPrefix); !ok {
			return "", "", false
		}
	}
	id, secret, ok = strings.Cut(rest, ".")
	if !ok || len(secret) != secretLen || token.Check("credential id", id) != nil {
		return "", "", false
	}
	return id, secret, true
}

// The secret is 256 random bits: a fast hash is as safe to keep as a slow
// one, for there is no dictionary to try (a slow hash is for passwords
// people choose). It costs a connection or an HTTP request a microsecond.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// InboxPrefix is the prefix of the reply subjects of a NATS connection
// that presents tok: "_INBOX.c-<id>" for a credential's token, so that
// the credential may be allowed its own replies and no one else's; ""
// (nats.go's own) for any other. A nuid, which nats.go's own inboxes
// use, never holds a '-', so no connection's inbox falls under another's.
func InboxPrefix(tok string) string {
	if id := ID(tok); id != "" {
		return InboxOf(id)
	}
	return ""
}

// InboxOf is the inbox prefix of the credential id.
func InboxOf(id string) string { return subject.CredentialInbox(id) }

// Namespaces lists the namespaces of s's credentials that are not own.
func (s *Set) Namespaces(own string) []string {
	var nss []string
	if s == nil {
		return nil
	}
	for _, c := range s.byID {
		if c.Namespace != "" && c.Namespace != own && !slices.Contains(nss, c.Namespace) {
			nss = append(nss, c.Namespace)
		}
	}
	slices.Sort(nss)
	return nss
}

// Set is a set of credentials to check tokens against. It is not changed
// once made; a new file makes a new Set.
type Set struct {
	byID map[string]Credential
}

// NewSet returns the set of creds; a later one of the same id wins.
func NewSet(creds []Credential) *Set {
	s := &Set{byID: make(map[string]Credential, len(creds))}
	for _, c := range creds {
		s.byID[c.ID] = c
	}
	return s
}

// All returns s's credentials, in no order.
func (s *Set) All() []Credential {
	if s == nil {
		return nil
	}
	all := make([]Credential, 0, len(s.byID))
	for _, c := range s.byID {
		all = append(all, c)
	}
	return all
}

// Len is how many credentials s holds.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.byID)
}

// Get returns the credential id, if s holds it.
func (s *Set) Get(id string) (Credential, bool) {
	if s == nil {
		return Credential{}, false
	}
	c, ok := s.byID[id]
	return c, ok
}

// Check returns the credential tok proves, if any.
func (s *Set) Check(tok string) (Credential, bool) {
	id, secret, ok := split(tok)
	if !ok {
		return Credential{}, false
	}
	c, ok := s.Get(id)
	if !ok {
		return Credential{}, false
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(c.Hash)) != 1 {
		return Credential{}, false
	}
	return c, true
}

// Changed lists the ids of s's credentials that next no longer holds as
// they were: revoked, or issued again (a new secret, role or types).
func (s *Set) Changed(next *Set) []string {
	var ids []string
	if s == nil {
		return nil
	}
	for id, c := range s.byID {
		n, ok := next.Get(id)
		if !ok || n.Hash != c.Hash || n.Role != c.Role || n.Namespace != c.Namespace || n.HostID != c.HostID || !slices.Equal(n.Types, c.Types) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}
