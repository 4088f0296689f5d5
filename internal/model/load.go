package model

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// LoadOptions control loading from paths.
type LoadOptions struct {
	DecodeOptions
	// Stdin is read for the path "-"; nil means os.Stdin.
	Stdin io.Reader
}

// Load reads objects from files, directories (recursively: *.yaml, *.yml, *.json) and "-"
// (stdin). It reports every problem in every file, and returns no objects when there is any.
func Load(paths []string, opts LoadOptions) ([]Object, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("no input: give at least one file, directory or - for stdin")
	}
	var objs []Object
	var errs Errors
	for _, p := range paths {
		files, err := expand(p)
		if err != nil {
			errs = append(errs, &Error{File: p, Msg: err.Error()})
			continue
		}
		for _, f := range files {
			o, err := loadFile(f, opts)
			if err != nil {
				if es, ok := err.(Errors); ok {
					errs = append(errs, es...)
				} else {
					errs = append(errs, &Error{File: f, Msg: err.Error()})
				}
				continue
			}
			objs = append(objs, o...)
		}
	}
	errs = append(errs, duplicates(objs)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return objs, nil
}

func expand(p string) ([]string, error) {
	if p == "-" {
		return []string{p}, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", unwrapPathError(err))
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, path)
			}
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Err
	}
	return err
}

func loadFile(f string, opts LoadOptions) ([]Object, error) {
	if f == "-" {
		in := opts.Stdin
		if in == nil {
			in = os.Stdin
		}
		return Decode(in, "-", opts.DecodeOptions)
	}
	r, err := os.Open(f)
	if err != nil {
		return nil, fmt.Errorf("cannot read: %w", unwrapPathError(err))
	}
	defer r.Close()
	return Decode(r, f, opts.DecodeOptions)
}

// duplicates reports an object defined twice in one load: the second would silently replace
// the first.
func duplicates(objs []Object) Errors {
	var errs Errors
	first := map[string]Object{}
	for _, o := range objs {
		k := o.Kind + "/" + o.Ref()
		if prev, ok := first[k]; ok {
			errs = append(errs, &Error{File: o.File, Doc: o.Doc, Kind: o.Kind, Ref: o.Ref(),
				Msg: fmt.Sprintf("defined again (first in %s, document %d)", prev.File, prev.Doc)})
			continue
		}
		first[k] = o
	}
	return errs
}
