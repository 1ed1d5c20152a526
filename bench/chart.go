package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

var targetColors = map[string]color.RGBA{
	"direct":  {120, 120, 120, 255},
	"relay":   {31, 119, 180, 255},
	"nginx":   {44, 160, 44, 255},
	"wsgate":  {214, 39, 40, 255},
	"rueidis": {148, 103, 189, 255},
	"haproxy": {23, 190, 207, 255},
	"traefik": {140, 86, 75, 255},
	"echo":    {255, 160, 60, 255},
}

type canvas struct{ *image.RGBA }

func (c canvas) rect(x0, y0, x1, y1 int, col color.Color) {
	draw.Draw(c.RGBA, image.Rect(x0, y0, x1, y1), image.NewUniform(col), image.Point{}, draw.Src)
}

// line draws a 2-pixel line.
func (c canvas) line(x0, y0, x1, y1 int, col color.Color) {
	dx, dy := math.Abs(float64(x1-x0)), math.Abs(float64(y1-y0))
	steps := int(math.Max(dx, dy))
	if steps == 0 {
		steps = 1
	}
	for i := 0; i <= steps; i++ {
		x := x0 + int(math.Round(float64(x1-x0)*float64(i)/float64(steps)))
		y := y0 + int(math.Round(float64(y1-y0)*float64(i)/float64(steps)))
		c.rect(x, y, x+2, y+2, col)
	}
}

// text draws s with its baseline at (x, y), scaled by an integer factor.
func (c canvas) text(x, y int, s string, col color.Color, scale int) {
	face := basicfont.Face7x13
	w := font.MeasureString(face, s).Ceil()
	tmp := image.NewRGBA(image.Rect(0, 0, w, 13))
	d := &font.Drawer{Dst: tmp, Src: image.NewUniform(col), Face: face, Dot: fixed.P(0, 10)}
	d.DrawString(s)
	for ty := 0; ty < 13; ty++ {
		for tx := 0; tx < w; tx++ {
			if _, _, _, a := tmp.At(tx, ty).RGBA(); a > 0x8000 {
				c.rect(x+tx*scale, y-10*scale+ty*scale, x+(tx+1)*scale, y-10*scale+(ty+1)*scale, col)
			}
		}
	}
}

func textWidth(s string, scale int) int {
	return font.MeasureString(basicfont.Face7x13, s).Ceil() * scale
}

// writeChart draws the 64 B latency distribution (CDF) of every target and
// the memory per idle pair, side by side.
func writeChart(r *Results, path string) error {
	const W, H = 1400, 620
	c := canvas{image.NewRGBA(image.Rect(0, 0, W, H))}
	c.rect(0, 0, W, H, color.White)
	black, grid := color.RGBA{30, 30, 30, 255}, color.RGBA{225, 225, 225, 255}
	c.text(30, 40, "wsgate vs baselines, same run, loopback ("+r.Date+")", black, 2)

	// Left: CDF of 64 B round trips.
	lx0, ly0, lx1, ly1 := 90, 110, 800, 540
	c.text(lx0, 90, "Round-trip latency, 64 B, 1 connection (CDF)", black, 2)
	var xmax float64
	for _, s := range r.CDF {
		xmax = math.Max(xmax, 1.2*pct(sortedCopy(s), 99))
	}
	xmax = niceCeil(xmax)
	for i := 0; i <= 5; i++ {
		x := lx0 + (lx1-lx0)*i/5
		c.rect(x, ly0, x+1, ly1, grid)
		lbl := fmt.Sprintf("%.0f", xmax*float64(i)/5)
		c.text(x-textWidth(lbl, 1)/2, ly1+18, lbl, black, 1)
	}
	for i := 0; i <= 4; i++ {
		y := ly1 - (ly1-ly0)*i/4
		c.rect(lx0, y, lx1, y+1, grid)
		lbl := fmt.Sprintf("%d%%", 25*i)
		c.text(lx0-8-textWidth(lbl, 1), y+4, lbl, black, 1)
	}
	c.text((lx0+lx1)/2-60, ly1+40, "round trip, us (axis ends past the slowest p99)", black, 1)
	legendY := ly1 - 126
	c.text(lx1-260, legendY-20, "all rounds pooled:", black, 1)
	for _, t := range []string{"direct", "relay", "nginx", "haproxy", "traefik", "wsgate"} {
		s, ok := r.CDF[t]
		if !ok || len(s) == 0 {
			continue
		}
		sorted := sortedCopy(s)
		col := targetColors[t]
		px, py := -1, -1
		for i := 0; i <= 400; i++ {
			q := float64(i) / 400 * 100
			v := pct(sorted, math.Max(q, 0.01))
			x := lx0 + int(math.Min(v/xmax, 1)*float64(lx1-lx0))
			y := ly1 - int(q/100*float64(ly1-ly0))
			if px >= 0 {
				c.line(px, py, x, y, col)
			}
			px, py = x, y
		}
		c.rect(lx1-260, legendY-9, lx1-244, legendY+1, col)
		c.text(lx1-236, legendY, fmt.Sprintf("%-7s p50 %4.0f  p99 %4.0f us", t, pct(sorted, 50), pct(sorted, 99)), black, 1)
		legendY += 18
	}
	c.rect(lx0, ly0, lx0+1, ly1, black)
	c.rect(lx0, ly1, lx1, ly1+1, black)

	// Right: memory per idle pair.
	rx0, ry0, rx1, ry1 := 900, 125, 1360, 540
	var idle *Metric
	var upShare *Metric
	for _, m := range r.Metrics {
		if m.Name == "proxy RSS per pair" {
			idle = m
		}
		if m.Name == "echo upstream's own RSS per conn" {
			upShare = m
		}
	}
	c.text(rx0-40, 90, "Memory per idle proxied pair", black, 2)
	if idle != nil {
		c.text(rx0-40, 106, "VmRSS growth / pairs; "+idle.Section[len("idle, "):]+" held", black, 1)
	}
	type bar struct {
		label string
		v     float64
		col   color.RGBA
	}
	var bars []bar
	if idle != nil {
		for _, t := range []string{"relay", "nginx", "haproxy", "traefik", "wsgate"} {
			if v, ok := idle.Median[t]; ok {
				bars = append(bars, bar{t, v, targetColors[t]})
			}
		}
	}
	if upShare != nil {
		if v, ok := upShare.Median["direct"]; ok {
			bars = append(bars, bar{"echo upstream", v, targetColors["echo"]})
		}
	}
	// The target line: HAProxy's median (issue #14), else the old 16 KiB.
	goalKiB, goalLabel := 16.0, "goal: 16 KiB"
	if idle != nil {
		if v, ok := idle.Median["haproxy"]; ok && !math.IsNaN(v) {
			goalKiB, goalLabel = v, fmt.Sprintf("target: HAProxy %.1f KiB", v)
		}
	}
	ymax := goalKiB
	for _, b := range bars {
		ymax = math.Max(ymax, b.v)
	}
	ymax = niceCeil(ymax * 1.1)
	for i := 0; i <= 5; i++ {
		y := ry1 - (ry1-ry0)*i/5
		c.rect(rx0, y, rx1, y+1, grid)
		lbl := fmt.Sprintf("%.0f", ymax*float64(i)/5)
		c.text(rx0-8-textWidth(lbl, 1), y+4, lbl, black, 1)
	}
	c.text(rx0-38, ry0+22, "KiB", black, 1)
	gy := ry1 - int(goalKiB/ymax*float64(ry1-ry0))
	for x := rx0; x < rx1; x += 12 {
		c.rect(x, gy, x+6, gy+2, color.RGBA{0, 0, 0, 255})
	}
	for x := rx1 - 230; x < rx1-200; x += 12 {
		c.rect(x, ry0+16, x+6, ry0+18, black)
	}
	c.text(rx1-192, ry0+21, goalLabel, black, 1)
	if n := len(bars); n > 0 {
		slot := (rx1 - rx0) / n
		for i, b := range bars {
			x := rx0 + i*slot + slot/6
			h := int(b.v / ymax * float64(ry1-ry0))
			c.rect(x, ry1-h, x+slot*2/3, ry1, b.col)
			lbl := fmt.Sprintf("%.1f", b.v)
			c.text(x+slot/3-textWidth(lbl, 2)/2, ry1-h-8, lbl, black, 2)
			c.text(x+slot/3-textWidth(b.label, 1)/2, ry1+18, b.label, black, 1)
		}
	} else {
		c.text(rx0+20, (ry0+ry1)/2, "no idle-memory figures in this run", black, 1)
	}
	c.rect(rx0, ry0, rx0+1, ry1, black)
	c.rect(rx0, ry1, rx1, ry1+1, black)
	c.text(30, H-20, "Medians over interleaved rounds; details and ratios in README.md and results.json.", black, 1)

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c.RGBA); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}
