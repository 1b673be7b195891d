package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The v1 controllers this package uses. memory, pids and cpu hold the
// limits; freezer, where there is no cgroup2 hierarchy, stops a leaf's
// processes while they are killed.
const (
	Memory  = "memory"
	Pids    = "pids"
	CPU     = "cpu"
	Freezer = "freezer"
)

// controllers are those a Host uses, in the order they are listed.
var controllers = []string{Memory, Pids, CPU, Freezer}

// Layout is where this process sits in the host's cgroup hierarchies.
type Layout struct {
	// Unified is the directory of this process's cgroup in the cgroup2
	// hierarchy; empty if none is mounted.
	Unified string
	// UnifiedRoot reports whether Unified is the root of its hierarchy,
	// which may hold processes and hand controllers down at once.
	UnifiedRoot bool
	// V1 maps each controller of controllers mounted as cgroup v1 to the
	// directory of this process's cgroup in its hierarchy.
	V1 map[string]string
}

// ErrNoCgroups is returned by ReadLayout when no cgroup file system is
// mounted where this process can see it.
var ErrNoCgroups = errors.New("no cgroup file system is mounted")

// ReadLayout reads this process's layout from /proc/self/cgroup and
// /proc/self/mountinfo.
func ReadLayout() (Layout, error) {
	cg, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return Layout{}, err
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return Layout{}, err
	}
	return ParseLayout(cg, mi)
}

// ParseLayout returns the layout that a /proc/self/cgroup and a
// /proc/self/mountinfo describe.
func ParseLayout(procCgroup, mountinfo []byte) (Layout, error) {
	var unifiedPath string
	v1Paths := map[string]string{} // controller -> cgroup path
	for line := range bytes.Lines(procCgroup) {
		// hierarchy-ID:controller-list:path
		f := strings.SplitN(strings.TrimSpace(string(line)), ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			unifiedPath = f[2]
			continue
		}
		for _, c := range strings.Split(f[1], ",") {
			if slices.Contains(controllers, c) {
				v1Paths[c] = f[2]
			}
		}
	}
	l := Layout{V1: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		// id parent dev root mountpoint options [tags] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 {
			continue
		}
		root, mnt := unescape(f[3]), unescape(f[4])
		switch g[0] {
		case "cgroup2":
			if l.Unified != "" || unifiedPath == "" {
				continue
			}
			if dir, ok := under(root, mnt, unifiedPath); ok {
				l.Unified, l.UnifiedRoot = dir, dir == mnt && root == "/"
			}
		case "cgroup":
			for _, opt := range strings.Split(g[2], ",") {
				path, mine := v1Paths[opt]
				if _, seen := l.V1[opt]; !mine || seen {
					continue
				}
				if dir, ok := under(root, mnt, path); ok {
					l.V1[opt] = dir
				}
			}
		}
	}
	if l.Unified == "" && len(l.V1) == 0 {
		return l, ErrNoCgroups
	}
	return l, nil
}

// under returns the directory of cgroup path in a cgroup file system
// mounted at mnt whose root is the cgroup root, if path is under root.
func under(root, mnt, path string) (string, bool) {
	rel, ok := strings.CutPrefix(path, strings.TrimSuffix(root, "/"))
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		return "", false
	}
	return filepath.Join(mnt, rel), true
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var n byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &n); err == nil {
				b.WriteByte(n)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// String describes the layout for a log line.
func (l Layout) String() string {
	var parts []string
	if l.Unified != "" {
		parts = append(parts, "cgroup2 "+l.Unified)
	}
	for _, c := range controllers {
		if dir, ok := l.V1[c]; ok {
			parts = append(parts, "v1 "+c+" "+dir)
		}
	}
	return strings.Join(parts, ", ")
}
