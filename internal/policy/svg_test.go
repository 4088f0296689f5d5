package policy

import (
	"bytes"
	"encoding/xml"
	"image/png"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// TestSVGRenders draws a matrix, renders it to PNG with rsvg-convert (librsvg, from Debian)
// and reads each cell's colour back at its centre: the picture says what the cells say.
func TestSVGRenders(t *testing.T) {
	cells := []Cell{
		{From: "a/x", To: "b/y", Port: 80, Protocol: "TCP", Allowed: true},
		{From: "b/y", To: "a/x", Port: 80, Protocol: "TCP", Allowed: false},
		{From: "a/x", To: "c/a-long-pod-name-0", Port: 80, Protocol: "TCP", Allowed: false},
		{From: "a/x", To: "b/y", Port: 53, Protocol: "UDP", Allowed: false},
		{From: "c/a-long-pod-name-0", To: "b/y", Port: 53, Protocol: "UDP", Allowed: true},
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, cells); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(svg.Bytes(), new(struct{})); err != nil {
		t.Fatalf("not well-formed XML: %v", err)
	}
	rsvg, err := exec.LookPath("rsvg-convert")
	if err != nil {
		if os.Getenv("RAMPART_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("rsvg-convert (librsvg2-bin) is missing: make test installs it")
		}
		t.Skip("rsvg-convert (librsvg2-bin) not installed")
	}
	cmd := exec.Command(rsvg, "--format", "png")
	cmd.Stdin = &svg
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("rsvg-convert: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	order, groups, pods := groupCells(cells)
	l := newSVGLayout(pods, len(order))
	if b := img.Bounds(); b.Dx() != l.width() || b.Dy() != l.height() {
		t.Fatalf("image %v, want %dx%d", b, l.width(), l.height())
	}
	want := map[string]string{"allowed": ColorAllowed, "denied": ColorDenied, "none": ColorNotProbe}
	for g, k := range order {
		for r, from := range pods {
			for c, to := range pods {
				verdict := "none"
				if ok, probed := groups[k][[2]string{from, to}]; probed {
					verdict = map[bool]string{true: "allowed", false: "denied"}[ok]
				}
				x, y := l.cellXY(g, r, c)
				cr, cg, cb, _ := img.At(x+l.cell/2, y+l.cell/2).RGBA()
				got := rgbHex(cr>>8, cg>>8, cb>>8)
				if got != want[verdict] {
					t.Errorf("port %d/%s, %s -> %s (%s): pixel %s, want %s", k.port, k.proto, from, to, verdict, got, want[verdict])
				}
			}
		}
	}
}

func rgbHex(r, g, b uint32) string {
	h := func(v uint32) string {
		s := strconv.FormatUint(uint64(v), 16)
		if len(s) == 1 {
			s = "0" + s
		}
		return s
	}
	return "#" + h(r) + h(g) + h(b)
}
