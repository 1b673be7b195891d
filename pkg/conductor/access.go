package conductor

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/startstop"
	"github.com/conductor-run/conductor/internal/subject"
)

// access decides who may connect to the embedded NATS server and call the
// HTTP API, and with what role (docs/security.md, "Roles and
// credentials"):
//
//   - conductord's own connections present a secret made at start, kept
//     in memory only: admin;
//   - Config.Token, the one shared token of before roles: admin;
//   - a credential's token (Config.Credentials): its role, and on NATS
//     the grants of grants.go;
//   - no token at all, only while there is neither Token nor credential
//     (a conductor on loopback that nobody set a secret for): admin.
//
// The credentials file is read again when it changes (watch): a
// credential revoked or issued again loses its connections at once, and
// the first credential issued to an open conductor closes it.
type access struct {
	space    subject.Space
	path     string
	internal string // conductord's own token
	legacy   string // Config.Token
	log      *slog.Logger

	creds  atomic.Pointer[auth.Set]
	loaded fileStamp // the file's as newAccess read it; then the watch's
	// nsLimits bound what another namespace's account may hold in the
	// server's JetStream (Config.NamespaceMaxBytes and the rest).
	nsLimits server.JetStreamAccountLimits
	// cluster is set, before the server starts, when it is a node of an
	// embedded cluster: it makes no account of another namespace
	// (cluster.go, ErrClusterNamespaces). Then read only.
	cluster bool
	// secured is set once there is a Token or a credential, for good: a
	// conductor whose credentials are all revoked (or whose file is
	// removed) stays closed rather than open to anyone again.
	secured atomic.Bool

	mu       sync.Mutex      // guards ns and exported
	ns       *server.Server  // the embedded server, to close revoked connections; nil without
	exported map[string]bool // "<account> <subject>": the exports to host accounts made (hostaccount.go)

	// held are the long HTTP calls (event streams) of each credential,
	// ended when it is revoked or replaced, as its NATS connections are.
	heldMu sync.Mutex
	held   map[string]map[*held]struct{}
}

type held struct{ end func() }

// hold registers end as the way to cut a long call of credential id
// short; the returned func unregisters it. A call of no credential (the
// shared token, an open conductor) is not held.
func (a *access) hold(id string, end func()) (release func()) {
	if id == "" {
		return func() {}
	}
	h := &held{end: end}
	a.heldMu.Lock()
	if a.held == nil {
		a.held = map[string]map[*held]struct{}{}
	}
	if a.held[id] == nil {
		a.held[id] = map[*held]struct{}{}
	}
	a.held[id][h] = struct{}{}
	a.heldMu.Unlock()
	return func() {
		a.heldMu.Lock()
		delete(a.held[id], h)
		if len(a.held[id]) == 0 {
			delete(a.held, id)
		}
		a.heldMu.Unlock()
	}
}

// endHeld ends the long calls of credential id.
func (a *access) endHeld(id string) {
	a.heldMu.Lock()
	var ends []func()
	for h := range a.held[id] {
		ends = append(ends, h.end)
	}
	a.heldMu.Unlock()
	for _, end := range ends {
		end()
	}
}

// The user names the server knows connections by (Connz), to close them.
const (
	userConductord = "conductord"
	userToken      = "token"
	userAnonymous  = "anonymous"
	userCredential = "credential:"
)

// newAccess reads the credentials at path (none if it does not exist).
func newAccess(space subject.Space, path, legacy string, log *slog.Logger) (*access, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("conductor: own secret: %w", err)
	}
	a := &access{space: space, path: path, legacy: legacy, log: log,
		internal: "conductord." + base64.RawURLEncoding.EncodeToString(b[:])}
	// The file as it was before it is read: a change from then on, even
	// before the watch begins, is read again.
	a.loaded, _ = stamp(path)
	creds, err := auth.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("conductor: %w", err)
	}
	a.creds.Store(auth.NewSet(creds))
	a.secured.Store(legacy != "" || len(creds) > 0)
	return a, nil
}

// open reports whether no secret is required: there has never been a
// Token or a credential.
func (a *access) open() bool { return !a.secured.Load() }

// hostTypes returns, by host id, the job types the host credentials of
// that host (in this namespace) allow, anyType among them for a
// credential of every type. A host with none (it connects with the
// admin's token, or the conductor is open) is not in the map: it may run
// any. A host's heartbeat may name any pool: this is what keeps the
// pools of other types out of what conductord makes of it (liveHosts)
// and out of the logs it serves (http_logs.go).
func (a *access) hostTypes() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, cr := range a.creds.Load().All() {
		if cr.Role != auth.Host || (cr.Namespace != "" && cr.Namespace != a.space.Namespace()) {
			continue
		}
		may := out[cr.Host()]
		if may == nil {
			may = map[string]bool{}
			out[cr.Host()] = may
		}
		if len(cr.Types) == 0 {
			may[anyType] = true
		}
		for _, t := range cr.Types {
			may[t] = true
		}
	}
	return out
}

// anyType stands, in hostTypes, for every type: no type is "*".
const anyType = "*"

// hostMayRun reports whether host may run the pool of type typ.
func (a *access) hostMayRun(host, typ string) bool {
	may, ok := a.hostTypes()[host]
	return !ok || may[anyType] || may[typ]
}

// principal is who a token proves: a role, and a credential's types.
type principal struct {
	user string
	cred auth.Credential // Role Admin for conductord, Token and an open conductor
}

// check returns who tok proves, if anyone.
func (a *access) check(tok string) (principal, bool) {
	admin := auth.Credential{Role: auth.Admin}
	switch {
	case tok == "" && a.open():
		return principal{user: userAnonymous, cred: admin}, true
	case tok == "":
		return principal{}, false
	case equal(tok, a.internal):
		return principal{user: userConductord, cred: admin}, true
	case a.legacy != "" && equal(tok, a.legacy):
		return principal{user: userToken, cred: admin}, true
	}
	cr, ok := a.creds.Load().Check(tok)
	if !ok {
		return principal{}, false
	}
	if cr.Namespace == a.space.Namespace() {
		cr.Namespace = ""
	}
	return principal{user: userCredential + cr.ID, cred: cr}, true
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// Check is the embedded server's authentication of a client (it
// implements server.Authentication).
func (a *access) Check(c server.ClientAuthentication) bool {
	p, ok := a.check(c.GetOpts().Token)
	if !ok {
		return false
	}
	user := &server.User{Username: p.user, Permissions: grants(a.space, p.cred)}
	if p.cred.Role == auth.Host {
		// In an account of its own, which reaches nothing but what it
		// imports (hostaccount.go).
		acc := a.hostAccount(p.cred)
		sp := a.space
		if ns := p.cred.Namespace; ns != "" {
			var err error
			if sp, err = subject.New(ns); err != nil {
				return false
			}
		}
		if acc == nil {
			return false
		}
		user.Account, user.Permissions = acc, hostPermissions(sp, p.cred)
	} else if ns := p.cred.Namespace; ns != "" {
		// Another namespace's credential: in that namespace's account,
		// which sees nothing of this one's, nor this one anything of it.
		space, err := subject.New(ns)
		acc := a.account(ns)
		if err != nil || acc == nil {
			return false
		}
		user.Account, user.Permissions = acc, grants(space, p.cred)
	}
	c.RegisterUser(user)
	// The credentials may have changed since: reload closes the
	// connections it finds of those revoked or replaced (and the anonymous
	// ones, at the first credential), and this one, which it may not have
	// found yet, is refused here.
	switch {
	case p.user == userAnonymous:
		return a.open()
	case p.cred.ID != "":
		cur, ok := a.creds.Load().Get(p.cred.ID)
		return ok && cur.Hash == p.cred.Hash
	}
	return true
}

// watch reads the credentials file again whenever it changes, every
// interval, until ctx ends.
func (a *access) watch(interval time.Duration) *startstop.Func {
	return startstop.NewFunc(func(ctx context.Context) {
		last := a.loaded
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now, err := stamp(a.path)
			if now == last && err == nil || errors.Is(err, fs.ErrNotExist) && last == (fileStamp{}) {
				continue
			}
			last = now
			a.reload()
		}
	})
}

// reload reads the credentials file and closes the connections of the
// credentials it no longer holds as they were. A file that cannot be read
// keeps the credentials as they were, and is logged: an edit gone wrong
// must not shut everyone out, nor let a revoked credential back.
func (a *access) reload() {
	creds, err := auth.ReadFile(a.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		a.log.Error("credentials not read again; the ones read before stay", "file", a.path, "err", err)
		return
	}
	next := auth.NewSet(creds)
	old := a.creds.Swap(next)
	wasOpen := len(creds) > 0 && !a.secured.Swap(true)
	changed := old.Changed(next)
	a.log.Info("credentials read", "file", a.path, "credentials", next.Len(), "revoked_or_replaced", len(changed))
	if err := a.makeAccounts(); err != nil {
		a.log.Error("a namespace's account could not be made: its credentials cannot connect", "err", err)
	}
	if err := a.makeHostAccounts(); err != nil {
		a.log.Error("a host's account could not be made: it cannot connect", "err", err)
	}
	for _, id := range changed {
		a.disconnect(userCredential + id)
		a.endHeld(id)
	}
	if wasOpen {
		a.disconnect(userAnonymous)
	}
}

// disconnect closes every connection of user to the embedded server.
func (a *access) disconnect(user string) {
	ns := a.server()
	if ns == nil {
		return
	}
	for {
		cz, err := ns.Connz(&server.ConnzOptions{User: user, Limit: 1024})
		if err != nil || len(cz.Conns) == 0 {
			return
		}
		for _, ci := range cz.Conns {
			if ns.DisconnectClientByID(ci.Cid) == nil {
				a.log.Info("connection closed: its credential is revoked or replaced", "user", user, "cid", ci.Cid, "ip", ci.IP)
			}
		}
		if len(cz.Conns) < 1024 {
			return
		}
	}
}

// fileStamp tells whether a file changed: its inode, size and time.
type fileStamp struct {
	ino, size int64
	mod       time.Time
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	s := fileStamp{size: fi.Size(), mod: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = int64(st.Ino)
	}
	return s, nil
}

// server is the embedded server, nil before it starts or without one.
func (a *access) server() *server.Server {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ns
}

// setServer gives access the embedded server, once it has started, and
// makes the accounts of the credentials' other namespaces.
func (a *access) setServer(ns *server.Server) error {
	a.mu.Lock()
	a.ns = ns
	a.mu.Unlock()
	if err := a.makeAccounts(); err != nil {
		return err
	}
	return a.makeHostAccounts()
}

// accountName is the NATS account of namespace ns, when it is not the
// conductor's own (whose account is the server's global one, where it has
// always been).
func accountName(ns string) string { return "conductor-ns-" + ns }

// account returns the account of another namespace, nil if not made.
func (a *access) account(ns string) *server.Account {
	srv := a.server()
	if srv == nil {
		return nil
	}
	acc, err := srv.LookupAccount(accountName(ns))
	if err != nil || !acc.JetStreamEnabled() {
		return nil
	}
	return acc
}

// makeAccounts makes an account, with JetStream, for each other namespace
// a credential names. The server's JetStream keeps each account's streams
// in a directory of its own, and recovers them when the account is made
// again after a restart.
func (a *access) makeAccounts() error {
	srv := a.server()
	if srv == nil {
		return nil
	}
	others := a.creds.Load().Namespaces(a.space.Namespace())
	if a.cluster && len(others) > 0 {
		return fmt.Errorf("%w: %s", ErrClusterNamespaces, strings.Join(others, ", "))
	}
	for _, ns := range others {
		acc, _ := srv.LookupOrRegisterAccount(accountName(ns))
		if acc.JetStreamEnabled() {
			continue
		}
		if err := acc.EnableJetStream(map[string]server.JetStreamAccountLimits{"": a.nsLimits}, nil); err != nil {
			return fmt.Errorf("conductor: JetStream for namespace %s: %w", ns, err)
		}
		a.log.Info("namespace account ready", "namespace", ns, "account", accountName(ns))
	}
	return nil
}
