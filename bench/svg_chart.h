// A small SVG line chart for the load generator's sweep: latency percentiles (log y
// axis, milliseconds) against offered load (linear x axis, messages/s). Self-contained
// text output, no dependency: the file opens in any browser.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace sb::bench {

struct ChartSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  // (x, y in ms), in x order
};

struct ChartText {
  std::string title;
  std::string subtitle;
  std::string x_label;
  std::string y_label;
};

namespace chart_detail {

inline std::string Esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '&') o += "&amp;";
    else if (c == '<') o += "&lt;";
    else if (c == '>') o += "&gt;";
    else if (c == '"') o += "&quot;";
    else o += c;
  }
  return o;
}

inline std::string Num(double v, int prec = 1) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

// 1, 2 or 5 times a power of ten, at least v.
inline double NiceStep(double v) {
  if (v <= 0) return 1;
  double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= v) return m * p;
  }
  return 10 * p;
}

// 12000 -> "12k", 2500 -> "2.5k", 800 -> "800".
inline std::string RateLabel(double v) {
  if (v >= 1000) {
    double k = v / 1000;
    return (std::fabs(k - std::round(k)) < 1e-9 ? Num(k, 0) : Num(k, 1)) + "k";
  }
  return Num(v, 0);
}

inline std::string MsLabel(double ms) {
  if (ms >= 1000) return Num(ms / 1000, 0) + " s";
  if (ms >= 1) return Num(ms, 0) + " ms";
  if (ms >= 0.1) return Num(ms, 1) + " ms";
  if (ms >= 0.01) return Num(ms, 2) + " ms";
  return Num(ms, 3) + " ms";
}

}  // namespace chart_detail

// `behind`: x values (offered loads) at which the server did not keep up; drawn as
// dashed red vertical lines.
inline std::string LatencyChartSvg(const ChartText& text, const std::vector<ChartSeries>& series,
                                   const std::vector<double>& behind) {
  using namespace chart_detail;
  static constexpr const char* kColors[] = {"#1f77b4", "#2ca02c", "#ff7f0e", "#d62728", "#9467bd", "#8c564b"};
  const double W = 900, H = 540, L = 90, R = 160, T = 84, B = 70;
  const double pw = W - L - R, ph = H - T - B;

  double xmax = 0, ymin = 0, ymax = 0;
  bool any = false;
  for (const auto& s : series) {
    for (const auto& [x, y] : s.points) {
      xmax = std::max(xmax, x);
      if (y > 0) {
        ymin = any ? std::min(ymin, y) : y;
        ymax = any ? std::max(ymax, y) : y;
        any = true;
      }
    }
  }
  for (double x : behind) xmax = std::max(xmax, x);

  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + Num(W, 0) + "\" height=\"" + Num(H, 0) +
       "\" viewBox=\"0 0 " + Num(W, 0) + " " + Num(H, 0) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o += "<text x=\"" + Num(W / 2, 0) + "\" y=\"26\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">" +
       Esc(text.title) + "</text>\n";
  // The subtitle may have several lines, separated by '\n'.
  double sy = 46;
  for (size_t from = 0; from <= text.subtitle.size(); sy += 15) {
    size_t nl = text.subtitle.find('\n', from);
    std::string line = text.subtitle.substr(from, nl == std::string::npos ? std::string::npos : nl - from);
    o += "<text x=\"" + Num(W / 2, 0) + "\" y=\"" + Num(sy, 0) + "\" text-anchor=\"middle\" fill=\"#555\">" +
         Esc(line) + "</text>\n";
    if (nl == std::string::npos) break;
    from = nl + 1;
  }
  if (!any || xmax <= 0) {
    o += "<text x=\"" + Num(W / 2, 0) + "\" y=\"" + Num(H / 2, 0) + "\" text-anchor=\"middle\">no data</text>\n</svg>\n";
    return o;
  }

  const double xstep = NiceStep(xmax / 6);
  const double xtop = std::ceil(xmax * 1.04 / xstep) * xstep;
  int lo = static_cast<int>(std::floor(std::log10(ymin)));
  int hi = static_cast<int>(std::ceil(std::log10(ymax)));
  if (hi <= lo) hi = lo + 1;
  auto X = [&](double x) { return L + pw * x / xtop; };
  auto Y = [&](double y) {
    double ly = std::log10(std::max(y, std::pow(10.0, lo)));
    return T + ph * (1 - (ly - lo) / (hi - lo));
  };

  // Grid: every decade (labelled) and its 2..9 multiples (faint).
  for (int e = lo; e <= hi; ++e) {
    double v = std::pow(10.0, e);
    o += "<line x1=\"" + Num(L) + "\" x2=\"" + Num(L + pw) + "\" y1=\"" + Num(Y(v)) + "\" y2=\"" + Num(Y(v)) +
         "\" stroke=\"#bbb\"/>\n";
    o += "<text x=\"" + Num(L - 8) + "\" y=\"" + Num(Y(v) + 4) + "\" text-anchor=\"end\">" + MsLabel(v) + "</text>\n";
    if (e == hi) break;
    for (int m = 2; m <= 9; ++m) {
      double mv = m * v;
      o += "<line x1=\"" + Num(L) + "\" x2=\"" + Num(L + pw) + "\" y1=\"" + Num(Y(mv)) + "\" y2=\"" + Num(Y(mv)) +
           "\" stroke=\"#eee\"/>\n";
    }
  }
  for (double x = 0; x <= xtop + xstep / 2; x += xstep) {
    o += "<line x1=\"" + Num(X(x)) + "\" x2=\"" + Num(X(x)) + "\" y1=\"" + Num(T) + "\" y2=\"" + Num(T + ph) +
         "\" stroke=\"#eee\"/>\n";
    o += "<text x=\"" + Num(X(x)) + "\" y=\"" + Num(T + ph + 18) + "\" text-anchor=\"middle\">" + RateLabel(x) +
         "</text>\n";
  }
  o += "<rect x=\"" + Num(L) + "\" y=\"" + Num(T) + "\" width=\"" + Num(pw) + "\" height=\"" + Num(ph) +
       "\" fill=\"none\" stroke=\"#333\"/>\n";
  o += "<text x=\"" + Num(L + pw / 2) + "\" y=\"" + Num(H - 22) + "\" text-anchor=\"middle\">" + Esc(text.x_label) +
       "</text>\n";
  o += "<text transform=\"translate(22 " + Num(T + ph / 2) + ") rotate(-90)\" text-anchor=\"middle\">" +
       Esc(text.y_label) + "</text>\n";

  for (double x : behind) {
    o += "<line x1=\"" + Num(X(x)) + "\" x2=\"" + Num(X(x)) + "\" y1=\"" + Num(T) + "\" y2=\"" + Num(T + ph) +
         "\" stroke=\"#d62728\" stroke-dasharray=\"5 4\"/>\n";
  }

  for (size_t i = 0; i < series.size(); ++i) {
    const auto& s = series[i];
    const char* color = kColors[i % (sizeof kColors / sizeof kColors[0])];
    std::string pts;
    for (const auto& [x, y] : s.points) {
      if (!pts.empty()) pts += ' ';
      pts += Num(X(x)) + "," + Num(Y(y));
    }
    if (!pts.empty()) {
      o += "<polyline fill=\"none\" stroke=\"" + std::string(color) + "\" stroke-width=\"2\" points=\"" + pts +
           "\"/>\n";
    }
    for (const auto& [x, y] : s.points) {
      o += "<circle cx=\"" + Num(X(x)) + "\" cy=\"" + Num(Y(y)) + "\" r=\"3.5\" fill=\"" + color + "\"><title>" +
           Esc(s.name) + " at " + RateLabel(x) + "/s: " + Num(y, 3) + " ms</title></circle>\n";
    }
    double ly = T + 14 + 22 * static_cast<double>(i);
    o += "<line x1=\"" + Num(L + pw + 16) + "\" x2=\"" + Num(L + pw + 44) + "\" y1=\"" + Num(ly) + "\" y2=\"" +
         Num(ly) + "\" stroke=\"" + color + "\" stroke-width=\"2\"/>\n";
    o += "<text x=\"" + Num(L + pw + 50) + "\" y=\"" + Num(ly + 4) + "\">" + Esc(s.name) + "</text>\n";
  }
  if (!behind.empty()) {
    double ly = T + 14 + 22 * static_cast<double>(series.size());
    o += "<line x1=\"" + Num(L + pw + 16) + "\" x2=\"" + Num(L + pw + 44) + "\" y1=\"" + Num(ly) + "\" y2=\"" +
         Num(ly) + "\" stroke=\"#d62728\" stroke-dasharray=\"5 4\"/>\n";
    o += "<text x=\"" + Num(L + pw + 50) + "\" y=\"" + Num(ly + 4) + "\">not keeping up</text>\n";
  }
  o += "</svg>\n";
  return o;
}

}  // namespace sb::bench
