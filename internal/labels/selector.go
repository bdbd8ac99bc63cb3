package labels

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Op is the operator of one requirement of a Selector.
type Op string

// Operators of kubectl's equality-based selectors.
const (
	// OpEquals, "k=v" (or "k==v"): the tenant has label k with value v.
	OpEquals Op = "="
	// OpNotEquals, "k!=v": the tenant has no label k, or another value.
	OpNotEquals Op = "!="
	// OpExists, "k": the tenant has label k, whatever its value.
	OpExists Op = "exists"
	// OpNotExists, "!k": the tenant has no label k.
	OpNotExists Op = "!"
)

// Requirement is one comma-separated term of a Selector.
type Requirement struct {
	Key   string
	Op    Op
	Value string // for OpEquals and OpNotEquals
}

// Selector selects tenants by their labels: every requirement must hold.
// The zero Selector selects every tenant.
type Selector struct {
	reqs []Requirement
}

// MaxSelectorLen bounds the length of a selector, in bytes.
const MaxSelectorLen = 4096

// Parse parses a selector in kubectl's equality form: comma-separated
// requirements "k=v" (or "k==v"), "k!=v", "k" and "!k", all of which must
// hold. Spaces around keys, operators and values are ignored. A value is
// any text without ',' of at most MaxValueLen characters, possibly empty.
// "" is the selector of every tenant. The error wraps ErrInvalid.
func Parse(s string) (Selector, error) {
	if len(s) > MaxSelectorLen {
		return Selector{}, fmt.Errorf("%w selector: %d bytes, at most %d", ErrInvalid, len(s), MaxSelectorLen)
	}
	if strings.TrimSpace(s) == "" {
		return Selector{}, nil
	}
	var sel Selector
	for term := range strings.SplitSeq(s, ",") {
		r, err := parseRequirement(strings.TrimSpace(term))
		if err != nil {
			return Selector{}, err
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

func parseRequirement(term string) (Requirement, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w selector term %s: %s (want k=v, k!=v, k or !k, comma-separated)", ErrInvalid, quote(term), why)
	}
	if term == "" {
		return Requirement{}, bad("empty")
	}
	var r Requirement
	switch i := strings.IndexAny(term, "=!"); {
	case i < 0:
		r = Requirement{Key: term, Op: OpExists}
	case i == 0 && term[0] == '!':
		r = Requirement{Key: strings.TrimSpace(term[1:]), Op: OpNotExists}
	case strings.HasPrefix(term[i:], "!="):
		r = Requirement{Key: strings.TrimSpace(term[:i]), Op: OpNotEquals, Value: strings.TrimSpace(term[i+2:])}
	case strings.HasPrefix(term[i:], "=="):
		r = Requirement{Key: strings.TrimSpace(term[:i]), Op: OpEquals, Value: strings.TrimSpace(term[i+2:])}
	case term[i] == '=':
		r = Requirement{Key: strings.TrimSpace(term[:i]), Op: OpEquals, Value: strings.TrimSpace(term[i+1:])}
	default:
		return Requirement{}, bad("'!' must start the term or come before '='")
	}
	if err := ValidateKey(r.Key); err != nil {
		return Requirement{}, bad(err.Error())
	}
	if strings.ContainsAny(r.Value, "=!") && (r.Op == OpEquals || r.Op == OpNotEquals) {
		return Requirement{}, bad("a value cannot contain '=' or '!'")
	}
	if err := ValidateValue(r.Key, r.Value); err != nil {
		return Requirement{}, bad(err.Error())
	}
	return r, nil
}

// Empty reports whether the selector selects every tenant.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// Requirements returns the requirements, in their order.
func (s Selector) Requirements() []Requirement { return slices.Clone(s.reqs) }

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, ok := labels[r.Key]
		switch r.Op {
		case OpEquals:
			if !ok || v != r.Value {
				return false
			}
		case OpNotEquals:
			if ok && v == r.Value {
				return false
			}
		case OpExists:
			if !ok {
				return false
			}
		case OpNotExists:
			if ok {
				return false
			}
		}
	}
	return true
}

// String returns the selector in the syntax Parse reads; Parse of it gives
// back an equal selector.
func (s Selector) String() string {
	terms := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		switch r.Op {
		case OpEquals:
			terms[i] = r.Key + "=" + r.Value
		case OpNotEquals:
			terms[i] = r.Key + "!=" + r.Value
		case OpExists:
			terms[i] = r.Key
		case OpNotExists:
			terms[i] = "!" + r.Key
		}
	}
	return strings.Join(terms, ",")
}

// SQL returns a boolean SQL condition on column (a jsonb column of label
// objects) for the selector, with its parameters numbered from $argStart,
// and the arguments. The equalities become one containment test
// (column @> '{"k":"v",...}') and each existence test column ? 'k', both
// answered by a GIN index on the column (jsonb_ops); the negations are
// filters on the rows those find. An empty selector is "true" with no
// arguments.
func (s Selector) SQL(column string, argStart int) (string, []any) {
	if s.Empty() {
		return "true", nil
	}
	var (
		conds []string
		args  []any
		eq    = map[string]string{}
	)
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(argStart+len(args)-1)
	}
	conflict := false
	for _, r := range s.reqs {
		if r.Op == OpEquals {
			if prev, ok := eq[r.Key]; ok && prev != r.Value {
				conflict = true
			}
			eq[r.Key] = r.Value
		}
	}
	if conflict {
		// k=a,k=b: nothing matches.
		return "false", nil
	}
	if len(eq) > 0 {
		b, _ := json.Marshal(eq) // a map[string]string always marshals
		conds = append(conds, column+" @> "+param(string(b))+"::jsonb")
	}
	for _, r := range s.reqs {
		switch r.Op {
		case OpExists:
			conds = append(conds, column+" ? "+param(r.Key)+"::text")
		case OpNotExists:
			conds = append(conds, "NOT ("+column+" ? "+param(r.Key)+"::text)")
		case OpNotEquals:
			b, _ := json.Marshal(map[string]string{r.Key: r.Value})
			conds = append(conds, "NOT ("+column+" @> "+param(string(b))+"::jsonb)")
		}
	}
	return "(" + strings.Join(conds, " AND ") + ")", args
}

// Keys returns the sorted keys of m, for stable output.
func Keys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// Format returns m as "k=v,k2=v2" in key order, "" for no labels.
func Format(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range Keys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}
