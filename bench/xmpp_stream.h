// The little XML that an XMPP client load generator needs (bench/xmpp_loadgen.cpp):
// split an XMPP stream (RFC 6120) into its top-level elements as bytes arrive, and read
// a few things from one element (its name, an attribute of its start tag, a child's
// text) without building a tree.
//
// It is not a general XML parser. It knows what an XMPP server sends: a stream header
// `<stream:stream ...>` (optionally after an XML declaration), then complete elements at
// depth 1, then `</stream:stream>`. Quotes inside tags are respected (a `>` inside an
// attribute value does not end the tag), comments, processing instructions and CDATA are
// skipped, entities are not decoded. Malformed input is not diagnosed: a benchmark talks
// to a real server, and a wrong split shows up as unparsable elements in the counts.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace sb::bench::xmpp {

class StreamSplitter {
 public:
  enum class Event {
    kNeedMore,     // no complete item buffered; Append more bytes
    kStreamOpen,   // the stream header; element() is its start tag
    kElement,      // a complete top-level element; element() is all of it
    kStreamClose,  // </stream:stream>
  };

  // Bytes read from the socket. Invalidates the view returned by element().
  void Append(std::string_view bytes) {
    Compact();
    buf_.append(bytes);
  }
  // Zero-copy variant: write up to n bytes at the returned pointer, then Commit(k).
  char* Prepare(size_t n) {
    Compact();
    filled_ = buf_.size();
    buf_.resize(filled_ + n);
    return buf_.data() + filled_;
  }
  void Commit(size_t k) { buf_.resize(filled_ + k); }

  // After SASL success both sides restart the stream: a new header follows and the
  // depth starts again from zero. Bytes already buffered are kept.
  void RestartStream() {
    depth_ = 0;
    elem_start_ = std::string::npos;
  }

  Event Next() {
    for (;;) {
      size_t lt = buf_.find('<', pos_);
      if (lt == std::string::npos) {
        pos_ = buf_.size();  // text (whitespace keepalives, element content): skip
        return Event::kNeedMore;
      }
      pos_ = lt;
      if (lt + 1 >= buf_.size()) return Event::kNeedMore;
      char c = buf_[lt + 1];
      if (c == '?') {
        size_t e = buf_.find("?>", lt + 2);
        if (e == std::string::npos) return Event::kNeedMore;
        pos_ = e + 2;
        continue;
      }
      if (c == '!') {
        std::string_view rest(buf_.data() + lt, buf_.size() - lt);
        std::string_view close;
        if (rest.starts_with("<!--")) close = "-->";
        else if (rest.starts_with("<![CDATA[")) close = "]]>";
        else if (rest.size() < 9) return Event::kNeedMore;  // cannot tell which yet
        else close = ">";                                    // <!DOCTYPE ...>: not XMPP; skip
        size_t e = buf_.find(close, lt + 2);
        if (e == std::string::npos) return Event::kNeedMore;
        pos_ = e + close.size();
        continue;
      }
      size_t gt = TagEnd(lt + 1);
      if (gt == std::string::npos) return Event::kNeedMore;
      pos_ = gt + 1;
      if (c == '/') {
        if (depth_ > 0) --depth_;
        if (depth_ == 0) {
          view_ = std::string_view(buf_.data() + lt, gt + 1 - lt);
          return Event::kStreamClose;
        }
        if (depth_ == 1) {
          view_ = std::string_view(buf_.data() + elem_start_, gt + 1 - elem_start_);
          elem_start_ = std::string::npos;
          return Event::kElement;
        }
        continue;
      }
      bool self_closing = buf_[gt - 1] == '/';
      if (depth_ == 0) {
        // The stream header never self-closes; a lone `<x/>` at depth 0 is not XMPP.
        depth_ = 1;
        view_ = std::string_view(buf_.data() + lt, gt + 1 - lt);
        return Event::kStreamOpen;
      }
      if (depth_ == 1) {
        if (self_closing) {
          view_ = std::string_view(buf_.data() + lt, gt + 1 - lt);
          return Event::kElement;
        }
        elem_start_ = lt;
      }
      if (!self_closing) ++depth_;
    }
  }

  // The item Next() last returned; valid until the next Append/Prepare.
  std::string_view element() const { return view_; }
  size_t buffered() const { return buf_.size(); }

 private:
  // Index of the `>` that closes the tag whose name starts at `from`, skipping quoted
  // attribute values; npos if it is not buffered yet.
  size_t TagEnd(size_t from) const {
    char quote = 0;
    for (size_t i = from; i < buf_.size(); ++i) {
      char ch = buf_[i];
      if (quote) {
        if (ch == quote) quote = 0;
      } else if (ch == '"' || ch == '\'') {
        quote = ch;
      } else if (ch == '>') {
        return i;
      }
    }
    return std::string::npos;
  }

  // Drops bytes nothing refers to any more: everything before the element being
  // assembled, or before the scan position when none is.
  void Compact() {
    size_t keep = elem_start_ != std::string::npos ? elem_start_ : pos_;
    if (keep == 0) return;
    buf_.erase(0, keep);
    pos_ -= keep;
    if (elem_start_ != std::string::npos) elem_start_ = 0;
    view_ = {};
  }

  std::string buf_;
  size_t pos_ = 0;
  size_t filled_ = 0;
  int depth_ = 0;
  size_t elem_start_ = std::string::npos;
  std::string_view view_;
};

// The qualified name of an element: "message", "stream:features", "a".
inline std::string_view Name(std::string_view el) {
  if (el.size() < 2 || el[0] != '<') return {};
  size_t e = el.find_first_of(" \t\r\n/>", 1);
  if (e == std::string_view::npos) return {};
  return el.substr(1, e - 1);
}

// The raw (undecoded) value of an attribute of the element's start tag, or nullopt-ish:
// `found` tells an empty value from a missing attribute.
inline std::string_view Attr(std::string_view el, std::string_view name, bool* found = nullptr) {
  if (found) *found = false;
  size_t i = 1 + Name(el).size();
  for (;;) {
    while (i < el.size() && (el[i] == ' ' || el[i] == '\t' || el[i] == '\r' || el[i] == '\n')) ++i;
    if (i >= el.size() || el[i] == '>' || el[i] == '/') return {};
    size_t eq = el.find('=', i);
    if (eq == std::string_view::npos) return {};
    std::string_view an = el.substr(i, eq - i);
    while (!an.empty() && (an.back() == ' ' || an.back() == '\t')) an.remove_suffix(1);
    size_t q = eq + 1;
    while (q < el.size() && el[q] == ' ') ++q;
    if (q >= el.size() || (el[q] != '\'' && el[q] != '"')) return {};
    size_t qe = el.find(el[q], q + 1);
    if (qe == std::string_view::npos) return {};
    if (an == name) {
      if (found) *found = true;
      return el.substr(q + 1, qe - q - 1);
    }
    i = qe + 1;
  }
}

// The text of the first child element named `name` (`<body>text</body>` -> "text"),
// searched anywhere inside `el`; empty if there is none.
inline std::string_view ChildText(std::string_view el, std::string_view name, bool* found = nullptr) {
  if (found) *found = false;
  size_t from = 1;
  for (;;) {
    size_t lt = el.find('<', from);
    if (lt == std::string_view::npos) return {};
    std::string_view rest = el.substr(lt + 1);
    if (rest.starts_with(name) && rest.size() > name.size()) {
      char after = rest[name.size()];
      if (after == '>' || after == ' ' || after == '/' || after == '\t') {
        size_t gt = el.find('>', lt);
        if (gt == std::string_view::npos) return {};
        if (el[gt - 1] == '/') {
          if (found) *found = true;
          return {};
        }
        std::string close = "</" + std::string(name) + ">";
        size_t ce = el.find(close, gt + 1);
        if (ce == std::string_view::npos) return {};
        if (found) *found = true;
        return el.substr(gt + 1, ce - gt - 1);
      }
    }
    from = lt + 1;
  }
}

// The name of the first child of the element's first <error> child, i.e. the stanza
// error condition ("service-unavailable"), or of a stream error's first child.
inline std::string_view ErrorCondition(std::string_view el) {
  size_t start = 1;
  if (Name(el) != "stream:error") {
    size_t e = el.find("<error");
    if (e == std::string_view::npos) return {};
    start = e + 1;
  }
  size_t gt = el.find('>', start);
  if (gt == std::string_view::npos) return {};
  size_t lt = el.find('<', gt);
  if (lt == std::string_view::npos || lt + 1 >= el.size() || el[lt + 1] == '/') return {};
  return Name(el.substr(lt));
}

}  // namespace sb::bench::xmpp
