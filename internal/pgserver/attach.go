package pgserver

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// state is what Start writes to Config.Dir for Attach.
type state struct {
	Port   int    `json:"port"`
	BinDir string `json:"bin_dir"`
}

// writeState writes the state file atomically, so that Attach never reads half of it.
func (s *Server) writeState() error {
	b, err := json.Marshal(state{Port: s.port, BinDir: s.run.binDir})
	if err != nil {
		return err
	}
	path := filepath.Join(s.dir, stateFileName)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Attach returns the Server that Start created in dir, which may have been started by
// another process. It does not check that the server is running: use Restart to start a
// stopped one. If dir holds no cluster made by Start, the error wraps fs.ErrNotExist.
func Attach(dir string) (*Server, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("attach to postgres: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFileName))
	if err != nil {
		return nil, fmt.Errorf("attach to postgres in %s: %w", dir, err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("attach to postgres in %s: read %s: %w", dir, stateFileName, err)
	}
	if st.Port <= 0 || st.BinDir == "" {
		return nil, fmt.Errorf("attach to postgres in %s: %s lacks port or bin_dir", dir, stateFileName)
	}
	r, err := newRunner(st.BinDir)
	if err != nil {
		return nil, fmt.Errorf("attach to postgres in %s: %w", dir, err)
	}
	s := &Server{dir: dir, port: st.Port, run: r}
	if _, err := os.Stat(s.dataDir()); err != nil {
		return nil, fmt.Errorf("attach to postgres in %s: %w", dir, err)
	}
	return s, nil
}
