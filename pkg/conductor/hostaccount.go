package conductor

import (
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/conductor-run/conductor/internal/auth"
	"github.com/conductor-run/conductor/internal/subject"
)

// Each host credential connects in a NATS account of its own, which
// reaches its namespace's account only through what it imports from it:
// the subjects of its grant (grants.go), each a service import, the
// JetStream API's under auth.HostAPIPrefix (an account without JetStream
// answers $JS.API itself). A request's answer goes where its reply subject
// says; in its own account, a host can aim an answer at nothing but what
// it may reach anyway (docs/security.md, "Roles and credentials").

// hostExports are the data account's service exports the host accounts
// import from, public (only access imports them), each with how its
// answers come: a pull's messages are many.
var hostExports = []struct {
	subject string
	answers server.ServiceRespType
}{
	{"$JS.API.INFO", server.Singleton},
	{"$JS.API.STREAM.INFO.>", server.Singleton},
	{"$JS.API.STREAM.MSG.GET.>", server.Singleton},
	{"$JS.API.DIRECT.GET.>", server.Singleton},
	{"$JS.API.CONSUMER.MSG.NEXT.>", server.Streamed},
	{"$JS.ACK.>", server.Singleton},
	{"$KV.>", server.Singleton},
	{"conductor.>", server.Singleton},
	{"_INBOX.*.ctl", server.Singleton},
	{"_INBOX.*.*.ctl", server.Singleton},
}

// How long a request of a host through its account's imports waits for
// its answers before the server forgets it: a store's ack, an API answer;
// a pull's jobs, which come within the pull's expiry; on a one-way
// subject (hostOneWay), which nothing answers, hardly at all.
const (
	hostAnswerWait = 10 * time.Second
	hostPullWait   = 40 * time.Second
	hostOneWayWait = 100 * time.Millisecond
	// hostRequestWait: a worker's request (requests.go) is answered
	// within RequestTimeout, and workerd waits a little longer.
	hostRequestWait = RequestTimeout + 10*time.Second
)

// hostOneWay are host credential cr's subjects that nothing answers: its
// heartbeats, its types' pools' logs, worker, pool and job events. A
// message with a reply subject through an import holds a response mapping
// (some 300 bytes) until answered or its export's wait: a host publishing
// them with reply subjects as fast as it can would hold hundreds of
// megabytes over hostAnswerWait, and holds a few over hostOneWayWait. Each is a service
// export of its own, named exactly as the import (the server finds an
// import's export by its exact subject first; among wildcards that match,
// in no order).
func hostOneWay(sp subject.Space, cr auth.Credential) []string {
	s := []string{sp.Host(cr.Host()), sp.WorkerEvents(), sp.PoolEvents()}
	for _, t := range types(cr.Types) {
		s = append(s, sp.Logs(cr.Host(), t), sp.TypeJobEvents(t))
	}
	return s
}

// hostAccountName names the account of host credential cr: a credential
// issued again (a new hash) gets a new account, with the imports of its
// new types.
func hostAccountName(cr auth.Credential) string {
	return "conductor-host-" + cr.ID + "-" + cr.Hash[:12]
}

// hostAccount returns the account of host credential cr, nil if it is not
// made (makeHostAccounts).
func (a *access) hostAccount(cr auth.Credential) *server.Account {
	srv := a.server()
	if srv == nil {
		return nil
	}
	acc, err := srv.LookupAccount(hostAccountName(cr))
	if err != nil {
		return nil
	}
	return acc
}

// makeHostAccounts makes the account of each host credential that has
// none.
func (a *access) makeHostAccounts() error {
	srv := a.server()
	if srv == nil {
		return nil
	}
	for _, cr := range a.creds.Load().All() {
		if cr.Role != auth.Host {
			continue
		}
		if err := a.makeHostAccount(srv, cr); err != nil {
			return fmt.Errorf("conductor: the account of host credential %s: %w", cr.ID, err)
		}
	}
	return nil
}

func (a *access) makeHostAccount(srv *server.Server, cr auth.Credential) error {
	name := hostAccountName(cr)
	if _, err := srv.LookupAccount(name); err == nil {
		return nil
	}
	sp, data := a.space, srv.GlobalAccount()
	if ns := cr.Namespace; ns != "" && ns != a.space.Namespace() {
		var err error
		if sp, err = subject.New(ns); err != nil {
			return err
		}
		if data = a.account(ns); data == nil {
			return fmt.Errorf("no account for namespace %s", ns)
		}
	}
	if err := a.exportToHosts(data, hostOneWay(sp, cr), []string{sp.RequestAs(cr.ID, "*")}); err != nil {
		return err
	}
	host, err := srv.RegisterAccount(name)
	if err != nil {
		return err
	}
	for _, im := range hostImports(sp, cr) {
		if err := host.AddServiceImport(data, im.from, im.to); err != nil {
			return fmt.Errorf("import %s: %w", im.to, err)
		}
	}
	// Its commands, the cancel and lookup feeds, and what is published
	// to its inbox come in.
	for _, s := range hostStreams(sp, cr) {
		if err := data.AddStreamExport(s, []*server.Account{host}); err != nil {
			return fmt.Errorf("export %s: %w", s, err)
		}
		if err := host.AddStreamImport(data, s, ""); err != nil {
			return fmt.Errorf("import %s: %w", s, err)
		}
	}
	a.log.Info("host account ready", "credential", cr.ID, "host", cr.Host(), "account", name)
	return nil
}

type serviceImport struct{ from, to string }

// hostImports are the service imports of host credential cr's account
// from namespace sp's: its grant's subjects (grants.go), the JetStream
// API's under auth.HostAPIPrefix, the key-value subjects also under it
// (where nats.go's puts go), and the reply subjects of commands.
func hostImports(sp subject.Space, cr auth.Credential) []serviceImport {
	g := grant{sp: sp}
	g.host(cr)
	var ims []serviceImport
	for _, s := range g.pubs {
		from, to := s, s
		if api, ok := strings.CutPrefix(s, "$JS.API."); ok {
			from = auth.HostAPIPrefix + "." + api
		}
		switch _, typ := sp.ParseEnds(s); {
		case typ != "" || s == sp.AllJobEnds():
			// Its ends come to conductord under its name (EndsAs), which
			// checks the final states they carry.
			to = sp.EndsAs(cr.ID, s[strings.LastIndexByte(s, '.')+1:])
		case s == sp.Lookups():
			// Its lookups too, each host within its rate.
			to = sp.LookupAs(cr.ID) + ".*"
		case s == sp.Requests():
			// Its workers' requests, naming the credential for the
			// handlers.
			to = sp.RequestAs(cr.ID, "*")
		}
		ims = append(ims, serviceImport{from, to})
		if strings.HasPrefix(s, "$KV.") {
			ims = append(ims, serviceImport{auth.HostAPIPrefix + "." + s, s})
		}
	}
	return ims
}

// hostStreams are the subjects host credential cr's account imports as
// streams from namespace sp's: its commands and tail requests, the cancel
// and lookup feeds, its inbox.
func hostStreams(sp subject.Space, cr auth.Credential) []string {
	return []string{sp.Control(cr.Host()), sp.LogTail(cr.Host()), sp.CancelFeed(), sp.LookupFeed(), auth.InboxOf(cr.ID) + ".>"}
}

// hostPermissions are a host's permissions in its own account: what it
// imports as a service to publish, what as a stream to subscribe to. It reaches nothing else
// either way; with them, what it may not do is refused with an error
// that workerd reports (a wrong --host-id), rather than dropped.
func hostPermissions(sp subject.Space, cr auth.Credential) *server.Permissions {
	var pubs []string
	for _, im := range hostImports(sp, cr) {
		pubs = append(pubs, im.from)
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pubs},
		Subscribe: &server.SubjectPermission{Allow: hostStreams(sp, cr)},
	}
}

// exportToHosts makes the data account's exports the host accounts
// import, once, and the one-way exports of a host, oneWay, and those of
// its workers' requests, requests (answered within hostRequestWait),
// each once: named exactly as the host's imports, so that the server
// takes them before conductor.>'s.
func (a *access) exportToHosts(data *server.Account, oneWay, requests []string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.exported == nil {
		a.exported = map[string]bool{}
	}
	export := func(subj string, answers server.ServiceRespType, wait time.Duration) error {
		key := data.Name + " " + subj
		if a.exported[key] {
			return nil
		}
		if err := data.AddServiceExportWithResponse(subj, answers, nil); err != nil {
			return fmt.Errorf("export %s: %w", subj, err)
		}
		// Each request through an import holds a response mapping until
		// it is answered or this long: a host that sends requests nobody
		// answers holds the server's memory no longer.
		if err := data.SetServiceExportResponseThreshold(subj, wait); err != nil {
			return fmt.Errorf("export %s: %w", subj, err)
		}
		a.exported[key] = true
		return nil
	}
	for _, e := range hostExports {
		// A pull's answers come within its expiry (workerd's 5s, by
		// default).
		wait := hostAnswerWait
		if e.answers == server.Streamed {
			wait = hostPullWait
		}
		if err := export(e.subject, e.answers, wait); err != nil {
			return err
		}
	}
	for _, s := range oneWay {
		if err := export(s, server.Singleton, hostOneWayWait); err != nil {
			return err
		}
	}
	for _, s := range requests {
		if err := export(s, server.Singleton, hostRequestWait); err != nil {
			return err
		}
	}
	return nil
}
