// AttachmentApi::PlanDownload: what GET /v1/attachments/{id} answers from its Range,
// If-Range and If-None-Match headers (RFC 9110 §13, §14). The gateway streams what
// the plan says; tests/integration/attachments_test.cpp checks the bytes on the wire.
#include <gtest/gtest.h>

#include "api/attachment_api.h"

namespace sb::api {
namespace {

using Plan = AttachmentApi::Plan;
const std::string kTag = "\"0123abcd\"";

Plan P(std::string_view range, std::string_view if_range = {}, std::string_view if_none_match = {},
       uint64_t size = 1000) {
  return AttachmentApi::PlanDownload(range, if_range, if_none_match, kTag, size);
}

void ExpectPartial(const Plan& p, uint64_t first, uint64_t last, std::string_view why = {}) {
  EXPECT_EQ(p.kind, Plan::kPartial) << why;
  EXPECT_EQ(p.first, first) << why;
  EXPECT_EQ(p.last, last) << why;
}

TEST(AttachmentRangeTest, OneRangeInItsThreeForms) {
  ExpectPartial(P("bytes=0-0"), 0, 0);
  ExpectPartial(P("bytes=10-19"), 10, 19);
  ExpectPartial(P("bytes=990-"), 990, 999);
  ExpectPartial(P("bytes=-10"), 990, 999);
  ExpectPartial(P("bytes=500-5000"), 500, 999, "a last byte past the end is cut to the end");
  ExpectPartial(P("bytes=-5000"), 0, 999, "a suffix longer than the file is all of it");
  ExpectPartial(P("Bytes=1-2"), 1, 2, "the unit is case-insensitive");
  ExpectPartial(P(" bytes= 1 - 2 "), 1, 2, "optional whitespace");
}

TEST(AttachmentRangeTest, RangesThatCannotBeMetAre416) {
  EXPECT_EQ(P("bytes=1000-").kind, Plan::kUnsatisfiable);
  EXPECT_EQ(P("bytes=1000-1000").kind, Plan::kUnsatisfiable);
  EXPECT_EQ(P("bytes=-0").kind, Plan::kUnsatisfiable);
}

TEST(AttachmentRangeTest, AnythingElseGetsTheWholeFile) {
  for (const char* r : {"", "bytes=", "bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=abc", "bytes=1",
                        "bytes=--1", "bytes=+1-2", "bytes=99999999999999999999-", "bytes=-99999999999999999999",
                        "bytes 0-1"}) {
    EXPECT_EQ(P(r).kind, Plan::kWhole) << "'" << r << "'";
  }
}

TEST(AttachmentRangeTest, IfRangeMustNameTheCurrentTag) {
  ExpectPartial(P("bytes=0-9", kTag), 0, 9);
  EXPECT_EQ(P("bytes=0-9", "\"other\"").kind, Plan::kWhole);
  EXPECT_EQ(P("bytes=0-9", "W/" + kTag).kind, Plan::kWhole) << "If-Range compares strongly";
  EXPECT_EQ(P("bytes=0-9", "Sat, 29 Oct 1994 19:43:31 GMT").kind, Plan::kWhole) << "no Last-Modified is sent";
  EXPECT_EQ(P("bytes=5000-", "\"other\"").kind, Plan::kWhole) << "a stale If-Range wins over a 416";
}

TEST(AttachmentRangeTest, IfNoneMatchWithTheTagIsNotModified) {
  EXPECT_EQ(P("", {}, kTag).kind, Plan::kNotModified);
  EXPECT_EQ(P("", {}, "*").kind, Plan::kNotModified);
  EXPECT_EQ(P("", {}, "\"a\", W/" + kTag).kind, Plan::kNotModified) << "weak comparison, any of a list";
  EXPECT_EQ(P("bytes=0-9", {}, kTag).kind, Plan::kNotModified) << "If-None-Match comes before Range";
  EXPECT_EQ(P("", {}, "\"a\", \"b\"").kind, Plan::kWhole);
  EXPECT_EQ(P("", {}, "0123abcd").kind, Plan::kWhole) << "an unquoted tag is not the tag";
}

}  // namespace
}  // namespace sb::api
