// The XMPP stream splitter of the ejabberd comparison's load generator
// (bench/xmpp_stream.h): a wrong split would silently turn into wrong figures.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../../bench/xmpp_stream.h"

namespace sb::bench::xmpp {
namespace {

using Event = StreamSplitter::Event;

struct Item {
  Event ev;
  std::string text;
};

// Feeds `input` in chunks of `chunk` bytes and collects everything the splitter yields.
std::vector<Item> Split(StreamSplitter& s, const std::string& input, size_t chunk) {
  std::vector<Item> out;
  for (size_t i = 0; i < input.size(); i += chunk) {
    s.Append(std::string_view(input).substr(i, chunk));
    for (;;) {
      Event ev = s.Next();
      if (ev == Event::kNeedMore) break;
      out.push_back({ev, std::string(s.element())});
    }
  }
  return out;
}

const std::string kHeader =
    "<?xml version='1.0'?><stream:stream id='1' version='1.0' xmlns:stream='http://etherx.jabber.org/streams' "
    "from='localhost' xmlns='jabber:client'>";
const std::string kFeatures =
    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>"
    "</mechanisms></stream:features>";
const std::string kMessage =
    "<message to='b@localhost' from='a@localhost/r' type='chat' id='m1'><body>lg 123 7 xx</body></message>";
const std::string kAck = "<a h='5' xmlns='urn:xmpp:sm:3'/>";

TEST(XmppStreamSplitter, SplitsTopLevelElementsAtEveryChunkSize) {
  std::string input = kHeader + kFeatures + " \n" + kMessage + kAck + "</stream:stream>";
  for (size_t chunk : {size_t{1}, size_t{2}, size_t{7}, size_t{64}, input.size()}) {
    StreamSplitter s;
    auto items = Split(s, input, chunk);
    ASSERT_EQ(items.size(), 5u) << "chunk " << chunk;
    EXPECT_EQ(items[0].ev, Event::kStreamOpen);
    EXPECT_EQ(Name(items[0].text), "stream:stream");
    EXPECT_EQ(items[1].ev, Event::kElement);
    EXPECT_EQ(items[1].text, kFeatures);
    EXPECT_EQ(items[2].text, kMessage);
    EXPECT_EQ(items[3].text, kAck);
    EXPECT_EQ(items[4].ev, Event::kStreamClose);
  }
}

TEST(XmppStreamSplitter, QuotedGreaterThanAndSkippedConstructs) {
  std::string tricky = "<message id='a>b' type=\"x>'y\"><body>t</body><!-- c > d --><x><![CDATA[<no>]]></x></message>";
  StreamSplitter s;
  auto items = Split(s, kHeader + tricky + "<?pi x?>" + kAck, 3);
  ASSERT_EQ(items.size(), 3u);
  EXPECT_EQ(items[1].text, tricky);
  EXPECT_EQ(Attr(items[1].text, "id"), "a>b");
  EXPECT_EQ(Attr(items[1].text, "type"), "x>'y");
  EXPECT_EQ(items[2].text, kAck);
}

TEST(XmppStreamSplitter, RestartAfterSaslStartsANewStream) {
  StreamSplitter s;
  auto first = Split(s, kHeader + "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>", 5);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(Name(first[1].text), "success");
  s.RestartStream();
  auto second = Split(s, kHeader.substr(21) + kFeatures, 5);  // no XML declaration this time
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0].ev, Event::kStreamOpen);
  EXPECT_EQ(second[1].text, kFeatures);
}

TEST(XmppStreamSplitter, ElementHelpers) {
  EXPECT_EQ(Name(kAck), "a");
  EXPECT_EQ(Attr(kAck, "h"), "5");
  bool found = true;
  EXPECT_EQ(Attr(kAck, "id", &found), "");
  EXPECT_FALSE(found);
  EXPECT_EQ(Attr(kMessage, "from"), "a@localhost/r");
  EXPECT_EQ(ChildText(kMessage, "body"), "lg 123 7 xx");
  EXPECT_EQ(ChildText(kMessage, "bod"), "");
  std::string bounce =
      "<message from='x@localhost' type='error' id='m2'><error type='cancel'><service-unavailable "
      "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error><body>x</body></message>";
  EXPECT_EQ(ErrorCondition(bounce), "service-unavailable");
  EXPECT_EQ(ErrorCondition("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"),
            "conflict");
  EXPECT_EQ(ErrorCondition(kMessage), "");
}

}  // namespace
}  // namespace sb::bench::xmpp
