package broker

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"
)

// Config file form of pool specs, as workerd --config reads it:
//
//	pools:
//	  - name: squares
//	    count: 2
//	    cmd: ./bin/squares-worker --label 'a b'   # or a list of words
//	    env: [LOG_LEVEL=debug]
//	    stop_timeout: 1m
//	    upgrades:                      # what an upgrade may name besides cmd
//	      - ./bin/squares-worker-v2
//	      - [./bin/squares-worker, --fast]
//	  - name: web
//	    protocol: none
//	    listen: 127.0.0.1:8080
//	    cmd: [./bin/web]
//
// The keys are those of ParseSpec; durations are Go durations ("30s").
type configFile struct {
	Pools []map[string]yaml.Node `yaml:"pools"`
}

// LoadConfig reads the pool specs of a config file. See ParseConfig.
func LoadConfig(path string) ([]Spec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	specs, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return specs, nil
}

// ParseConfig parses the pool specs of a config file. An unknown key, at
// the top or in a pool, a value of the wrong kind, and a pool that does not
// validate are errors naming the pool and the key.
func ParseConfig(data []byte) ([]Spec, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f configFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSpec, err)
	}
	if len(f.Pools) == 0 {
		return nil, fmt.Errorf("%w: no pools (want a list under \"pools:\")", ErrBadSpec)
	}
	specs := make([]Spec, 0, len(f.Pools))
	for i, fields := range f.Pools {
		spec, err := specFromYAML(fields)
		if err != nil {
			name := fmt.Sprintf("#%d", i+1)
			if n, ok := fields["name"]; ok && n.Value != "" {
				name = fmt.Sprintf("%q", n.Value)
			}
			return nil, fmt.Errorf("%w: pool %s: %w", ErrBadSpec, name, err)
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

func specFromYAML(fields map[string]yaml.Node) (Spec, error) {
	var spec Spec
	for key, node := range fields {
		var err error
		switch {
		case key == "cmd" && node.Kind == yaml.SequenceNode:
			err = node.Decode(&spec.Cmd)
		case key == "cmd" && node.Kind == yaml.ScalarNode:
			spec.Cmd, err = splitCmd(node.Value)
		case key == "env" && node.Kind == yaml.SequenceNode:
			err = node.Decode(&spec.Env)
		case key == "upgrades" && node.Kind == yaml.SequenceNode:
			spec.Upgrades, err = upgradesFromYAML(node)
		case node.Kind == yaml.ScalarNode && key != "env" && key != "upgrades":
			err = spec.set(key, node.Value)
		default:
			err = errors.New("want a single value")
			switch key {
			case "env":
				err = errors.New("want a list of KEY=VALUE")
			case "upgrades":
				err = errors.New("want a list of command lines")
			}
		}
		if err != nil {
			return Spec{}, fmt.Errorf("%s: %w", key, err)
		}
	}
	if len(spec.Cmd) == 0 {
		return Spec{}, errors.New("cmd: missing")
	}
	if key, problem := spec.check(); problem != "" {
		return Spec{}, fmt.Errorf("%s: %s", key, problem)
	}
	return spec, nil
}

// upgradesFromYAML decodes the upgrades list: each item a command line
// (split as cmd is) or a list of words.
func upgradesFromYAML(node yaml.Node) ([][]string, error) {
	out := make([][]string, 0, len(node.Content))
	for i, item := range node.Content {
		var words []string
		var err error
		switch item.Kind {
		case yaml.ScalarNode:
			words, err = splitCmd(item.Value)
		case yaml.SequenceNode:
			err = item.Decode(&words)
		default:
			err = errors.New("want a command line or a list of words")
		}
		if err != nil {
			return nil, fmt.Errorf("#%d: %w", i+1, err)
		}
		out = append(out, words)
	}
	return out, nil
}
