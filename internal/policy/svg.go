package policy

import (
	"fmt"
	"html"
	"io"
	"strings"
)

// Colours of the SVG matrix, one per verdict; tests read them back from the rendered image.
const (
	ColorAllowed  = "#2e9d4f"
	ColorDenied   = "#d1352b"
	ColorNotProbe = "#d9d9d9"
)

// svgLayout is the geometry of WriteSVG's drawing.
type svgLayout struct {
	cell, label, header, legend, gap int
	pods, groups, longest            int
}

func newSVGLayout(pods []string, groups int) svgLayout {
	longest := 0
	for _, p := range pods {
		longest = max(longest, len(p))
	}
	l := svgLayout{cell: 28, label: 7*longest + 16, legend: 44, gap: 40, pods: len(pods), groups: groups, longest: longest}
	l.header = 7*longest/10*7 + 40 // column labels at 45 degrees
	return l
}

// width leaves room for the last column's label, which leans right, and for the legend.
func (l svgLayout) width() int { return max(l.label+l.pods*l.cell+5*l.longest+20, 440) }

func (l svgLayout) groupHeight() int { return 28 + l.header + l.pods*l.cell }

func (l svgLayout) height() int { return l.legend + l.groups*(l.groupHeight()+l.gap) }

// cellXY is the top-left corner of cell (row, col) of group g.
func (l svgLayout) cellXY(g, row, col int) (int, int) {
	top := l.legend + g*(l.groupHeight()+l.gap) + 28 + l.header
	return l.label + col*l.cell, top + row*l.cell
}

// WriteSVG draws the matrix as an SVG image: one grid per port, rows are sources and columns
// destinations, each cell coloured by its verdict, with a legend.
func WriteSVG(w io.Writer, cells []Cell) error {
	order, groups, pods := groupCells(cells)
	l := newSVGLayout(pods, len(order))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">`+"\n",
		l.width(), l.height(), l.width(), l.height())
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	// Legend.
	x := 10
	for _, item := range []struct{ color, text string }{{ColorAllowed, "allowed"}, {ColorDenied, "denied"}, {ColorNotProbe, "not probed"}} {
		fmt.Fprintf(&b, `<rect x="%d" y="12" width="16" height="16" fill="%s" stroke="#555"/><text x="%d" y="25">%s</text>`+"\n", x, item.color, x+22, item.text)
		x += 30 + 8*len(item.text)
	}
	fmt.Fprintf(&b, `<text x="%d" y="25" fill="#555">rows: from, columns: to</text>`+"\n", x)
	for g, k := range order {
		grid := groups[k]
		_, top := l.cellXY(g, 0, 0)
		fmt.Fprintf(&b, `<text x="10" y="%d" font-weight="bold" font-size="14">port %d/%s: %d of %d allowed</text>`+"\n",
			top-l.header-8, k.port, html.EscapeString(k.proto), countAllowed(grid), len(grid))
		for i, p := range pods {
			cx, _ := l.cellXY(g, 0, i)
			fmt.Fprintf(&b, `<text transform="translate(%d,%d) rotate(-45)">%s</text>`+"\n", cx+l.cell/2, top-6, html.EscapeString(p))
			_, ry := l.cellXY(g, i, 0)
			fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", l.label-8, ry+l.cell/2+4, html.EscapeString(p))
		}
		for r, from := range pods {
			for c, to := range pods {
				color, what := ColorNotProbe, "not probed"
				if ok, probed := grid[[2]string{from, to}]; probed {
					color, what = ColorDenied, "denied"
					if ok {
						color, what = ColorAllowed, "allowed"
					}
				}
				cx, cy := l.cellXY(g, r, c)
				fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s" stroke="#ffffff" stroke-width="2"><title>%s -&gt; %s %d/%s: %s</title></rect>`+"\n",
					cx, cy, l.cell, l.cell, color, html.EscapeString(from), html.EscapeString(to), k.port, html.EscapeString(k.proto), what)
			}
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
