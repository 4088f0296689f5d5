package inventory

import (
	"fmt"
	"io"
	"os"
	"sync"

	slog "github.com/google/osv-scalibr/log"
)

// scalibr logs every filesystem walk at info level; rampart keeps only its errors, which it
// prints to Log (stderr by default) so that a file the extractors could not read is not silent.
var (
	logMu sync.Mutex
	// Log receives osv-scalibr's error messages.
	Log io.Writer = os.Stderr
)

type quietLogger struct{}

func (quietLogger) Errorf(format string, args ...any) { logf("scan: "+format, args...) }
func (quietLogger) Error(args ...any)                 { logf("scan: %s", fmt.Sprint(args...)) }
func (quietLogger) Warnf(string, ...any)              {}
func (quietLogger) Warn(...any)                       {}
func (quietLogger) Infof(string, ...any)              {}
func (quietLogger) Info(...any)                       {}
func (quietLogger) Debugf(string, ...any)             {}
func (quietLogger) Debug(...any)                      {}

func logf(format string, args ...any) {
	logMu.Lock()
	defer logMu.Unlock()
	fmt.Fprintf(Log, format+"\n", args...)
}

func init() { slog.SetLogger(quietLogger{}) }
