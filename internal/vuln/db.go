package vuln

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Database files: advisories.dat holds one JSON array of advisories per (ecosystem, package),
// index.json maps each key to its byte range, so a lookup reads the index once and then only
// the advisories of the packages asked for.
const (
	dataFile    = "advisories.dat"
	indexFile   = "index.json"
	indexFormat = 1
)

// Info describes an imported database.
type Info struct {
	Format     int            `json:"format"`
	Imported   time.Time      `json:"imported"`
	Sources    []string       `json:"sources"`
	Advisories int            `json:"advisories"`
	Withdrawn  int            `json:"withdrawn"`
	Packages   int            `json:"packages"`
	Ecosystems map[string]int `json:"ecosystems"` // advisories per base ecosystem
}

type index struct {
	Info
	Keys map[string][2]int64 `json:"keys"` // key -> offset, length in dataFile
}

func key(eco, name string) string {
	return BaseEcosystem(eco) + "|" + NormalizeName(eco, name)
}

// DefaultDir is where the database lives unless told otherwise: $RAMPART_DB, else the user's
// cache directory.
func DefaultDir() string {
	if d := os.Getenv("RAMPART_DB"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "rampart", "osv")
	}
	return filepath.Join(os.TempDir(), "rampart-osv")
}

// ImportOptions tune Import.
type ImportOptions struct {
	// Progress, when set, is called as files are read (done of total).
	Progress func(done, total int)
}

// Import reads OSV advisories from paths (JSON files, directories searched recursively, and zip
// archives such as osv.dev's per-ecosystem all.zip) and writes a fresh database to dir,
// replacing any previous one only once the new one is complete. A malformed advisory fails the
// import with its file name; withdrawn advisories are left out. The newest version of an
// advisory (by modified) wins when sources repeat it.
func Import(dir string, paths []string, opts ImportOptions) (Info, error) {
	var files []source
	for _, p := range paths {
		found, err := sources(p)
		if err != nil {
			return Info{}, err
		}
		files = append(files, found...)
	}
	if len(files) == 0 {
		return Info{}, fmt.Errorf("no OSV JSON files found in %s", strings.Join(paths, ", "))
	}
	newest := map[string]*Advisory{} // by ID: the version with the latest "modified"
	for i, src := range files {
		if opts.Progress != nil {
			opts.Progress(i, len(files))
		}
		if err := src.each(func(name string, data []byte) error {
			var adv Advisory
			dec := json.NewDecoder(bytes.NewReader(data))
			if err := dec.Decode(&adv); err != nil {
				return fmt.Errorf("%s: not an OSV record: %w", name, err)
			}
			if adv.ID == "" {
				return fmt.Errorf("%s: OSV record without an id", name)
			}
			if cur, ok := newest[adv.ID]; ok && cur.Modified > adv.Modified {
				return nil
			}
			trim(&adv)
			newest[adv.ID] = &adv
			return nil
		}); err != nil {
			return Info{}, err
		}
	}
	if opts.Progress != nil {
		opts.Progress(len(files), len(files))
	}
	perKey := map[string][]*Advisory{}
	info := Info{Format: indexFormat, Imported: time.Now().UTC(), Sources: paths, Ecosystems: map[string]int{}}
	for _, adv := range newest {
		if adv.Withdrawn != "" {
			info.Withdrawn++
			continue
		}
		info.Advisories++
		ecos := map[string]bool{}
		for _, aff := range adv.Affected {
			if aff.Package.Name == "" || aff.Package.Ecosystem == "" {
				continue
			}
			ecos[BaseEcosystem(aff.Package.Ecosystem)] = true
			k := key(aff.Package.Ecosystem, aff.Package.Name)
			if l := perKey[k]; len(l) == 0 || l[len(l)-1] != adv {
				perKey[k] = append(l, adv)
			}
		}
		for e := range ecos {
			info.Ecosystems[e]++
		}
	}
	info.Packages = len(perKey)
	return info, write(dir, perKey, info)
}

// trim drops what matching and reports never read (Go symbol lists, long details) so that
// the database stays small and lookups fast.
func trim(adv *Advisory) {
	adv.Details = ""
	adv.DatabaseSpecific = keepRatings(adv.DatabaseSpecific)
	for i := range adv.Affected {
		a := &adv.Affected[i]
		a.EcosystemSpecific = keepRatings(a.EcosystemSpecific)
		a.DatabaseSpecific = keepRatings(a.DatabaseSpecific)
	}
}

func keepRatings(m map[string]any) map[string]any {
	var out map[string]any
	for _, k := range ratingKeys {
		if v, ok := m[k].(string); ok {
			if out == nil {
				out = map[string]any{}
			}
			out[k] = v
		}
	}
	return out
}

func write(dir string, perKey map[string][]*Advisory, info Info) error {
	parent := filepath.Dir(filepath.Clean(dir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, ".osv-import-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	f, err := os.Create(filepath.Join(tmp, dataFile))
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(perKey))
	for k := range perKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	idx := index{Info: info, Keys: make(map[string][2]int64, len(keys))}
	var off int64
	for _, k := range keys {
		advs := perKey[k]
		sort.Slice(advs, func(i, j int) bool { return advs[i].ID < advs[j].ID })
		b, err := json.Marshal(advs)
		if err != nil {
			f.Close()
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		idx.Keys[k] = [2]int64{off, int64(len(b))}
		off += int64(len(b))
	}
	if err := f.Close(); err != nil {
		return err
	}
	ib, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, indexFile), ib, 0o644); err != nil {
		return err
	}
	// Swap in the new database: move the old one aside, rename, then remove the old one.
	old := ""
	if _, err := os.Stat(dir); err == nil {
		old = tmp + ".old"
		if err := os.Rename(dir, old); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if old != "" {
			_ = os.Rename(old, dir)
		}
		return err
	}
	if old != "" {
		return os.RemoveAll(old)
	}
	return nil
}

// source is one file of advisories: a JSON file or a zip archive of them.
type source struct {
	path  string
	isZip bool
}

func sources(p string) ([]source, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return []source{{path: p, isZip: strings.HasSuffix(strings.ToLower(p), ".zip")}}, nil
	}
	var out []source
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".json":
			out = append(out, source{path: path})
		case ".zip":
			out = append(out, source{path: path, isZip: true})
		}
		return nil
	})
	return out, err
}

func (s source) each(fn func(name string, data []byte) error) error {
	if !s.isZip {
		b, err := os.ReadFile(s.path)
		if err != nil {
			return err
		}
		return fn(s.path, b)
	}
	zr, err := zip.OpenReader(s.path)
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	defer zr.Close()
	for _, zf := range zr.File {
		if zf.FileInfo().IsDir() || !strings.HasSuffix(strings.ToLower(zf.Name), ".json") {
			continue
		}
		rc, err := zf.Open()
		if err != nil {
			return fmt.Errorf("%s!%s: %w", s.path, zf.Name, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s!%s: %w", s.path, zf.Name, err)
		}
		if err := fn(s.path+"!"+zf.Name, b); err != nil {
			return err
		}
	}
	return nil
}

// DB is an imported database opened for lookups. It is safe for concurrent use.
type DB struct {
	f   *os.File
	idx index
}

// ErrNoDatabase says the database has not been imported.
var ErrNoDatabase = errors.New("no vulnerability database: import one with `rampart db import PATH`")

// Open opens the database in dir.
func Open(dir string) (*DB, error) {
	ib, err := os.ReadFile(filepath.Join(dir, indexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w (looked in %s)", ErrNoDatabase, dir)
	}
	if err != nil {
		return nil, err
	}
	var idx index
	if err := json.Unmarshal(ib, &idx); err != nil {
		return nil, fmt.Errorf("%s: corrupt index: %w", dir, err)
	}
	if idx.Format != indexFormat {
		return nil, fmt.Errorf("%s: database format %d, this rampart reads %d: import it again", dir, idx.Format, indexFormat)
	}
	f, err := os.Open(filepath.Join(dir, dataFile))
	if err != nil {
		return nil, err
	}
	return &DB{f: f, idx: idx}, nil
}

// Info describes the database.
func (db *DB) Info() Info { return db.idx.Info }

// Close releases the database.
func (db *DB) Close() error { return db.f.Close() }

// Lookup returns the advisories that name a package, whatever its version.
func (db *DB) Lookup(eco, name string) ([]Advisory, error) {
	r, ok := db.idx.Keys[key(eco, name)]
	if !ok {
		return nil, nil
	}
	b := make([]byte, r[1])
	if _, err := db.f.ReadAt(b, r[0]); err != nil {
		return nil, fmt.Errorf("vulnerability database: %w", err)
	}
	var advs []Advisory
	if err := json.Unmarshal(b, &advs); err != nil {
		return nil, fmt.Errorf("vulnerability database: corrupt record for %s/%s: %w", eco, name, err)
	}
	return advs, nil
}
