import assert from "node:assert/strict";
import {
  conversationKey,
  directKey,
  exceedsUtf8,
  FrameParser,
  type ParseResult,
  roomKey,
  utf8Bytes,
} from "./message.ts";

const parser = new FrameParser({ maxContentChars: 100 });

function ok(text: string) {
  const result = parser.parse(text);
  assert.ok(result.ok, `expected ${text} to parse: ${JSON.stringify(result)}`);
  return result.frame;
}

function failure(text: string) {
  const result: ParseResult = parser.parse(text);
  assert.ok(!result.ok, `expected ${text} to fail`);
  return result.error;
}

Deno.test("FrameParser.parse() accepts the old server's untyped frame as legacy", () => {
  assert.deepEqual(ok('{"sender":"Abhi","content":"Hello, World!"}'), {
    type: "legacy",
    sender: "Abhi",
    content: "Hello, World!",
  });
  assert.deepEqual(ok('{"content":"hi"}'), { type: "legacy", content: "hi" });
});

Deno.test("FrameParser.parse() accepts every client frame type of protocol v1", () => {
  const frames = [
    { type: "message", room: "lobby", content: "x", ref: "r" },
    { type: "direct", to: "bob", content: "x" },
    { type: "join", room: "dev", since: 12 },
    { type: "leave", room: "dev" },
    { type: "history", room: "dev", before: 10, limit: 100 },
    { type: "history", with: "bob", after: 0 },
    { type: "presence", room: "dev" },
    { type: "typing", room: "dev" },
    { type: "refresh", token: "a.b.c" },
    { type: "ping" },
  ];
  for (const frame of frames) assert.deepEqual(ok(JSON.stringify(frame)), frame);
});

Deno.test("FrameParser.parse() names the failing field", () => {
  assert.equal(failure("{oops").code, "invalid_json");
  assert.equal(failure("[1,2]").code, "invalid_message");
  assert.equal(failure('"text"').code, "invalid_message");
  assert.equal(failure('{"type":"teleport"}').code, "unknown_type");
  assert.match(failure('{"type":7}').message, /"type"/);
  assert.match(failure('{"type":"message"}').message, /field "content" is missing/);
  assert.match(failure('{"type":"message","content":5}').message, /"content" must be a string/);
  assert.match(failure(`{"type":"message","content":"${"x".repeat(101)}"}`).message, /"content"/);
  assert.match(failure('{"type":"join","room":"a b"}').message, /"room"/);
  assert.match(failure(`{"type":"join","room":"${"r".repeat(65)}"}`).message, /"room"/);
  assert.match(failure('{"type":"join","room":"dev","since":-1}').message, /"since"/);
  assert.match(failure('{"type":"join","room":"dev","since":1.5}').message, /"since"/);
  assert.match(failure('{"type":"history","room":"dev","limit":101}').message, /"limit"/);
  assert.match(failure('{"type":"history"}').message, /"room"/);
  assert.match(failure('{"type":"history","room":"a","with":"b"}').message, /"room"/);
  assert.match(failure('{"type":"history","room":"a","before":2,"after":1}').message, /"before"/);
  assert.match(failure('{"type":"ping","extra":1}').message, /"extra" is not allowed/);
});

Deno.test("FrameParser.parse() echoes a well-formed ref on errors only", () => {
  assert.equal(failure('{"type":"message","content":5,"ref":"r1"}').ref, "r1");
  assert.equal(failure('{"type":"nope","ref":"r2"}').ref, "r2");
  assert.equal(failure(`{"type":"ping","ref":"${"x".repeat(65)}"}`).ref, undefined);
  assert.match(failure(`{"type":"ping","ref":"${"x".repeat(65)}"}`).message, /"ref"/);
});

Deno.test("FrameParser.parse() rejects prototype-pollution keys without touching prototypes", () => {
  for (const key of ["__proto__", "constructor", "prototype"]) {
    const error = failure(`{"type":"ping","${key}":{"polluted":true}}`);
    assert.equal(error.code, "invalid_message");
  }
  const legacy = failure('{"content":"x","__proto__":{"polluted":true}}');
  assert.equal(legacy.code, "invalid_message");
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

Deno.test("utf8Bytes() counts multi-byte characters and surrogate pairs", () => {
  assert.equal(utf8Bytes("abc"), 3);
  assert.equal(utf8Bytes("é"), 2);
  assert.equal(utf8Bytes("€"), 3);
  assert.equal(utf8Bytes("😀"), 4);
  const mixed = "a😀é€\u0000";
  assert.equal(utf8Bytes(mixed), new TextEncoder().encode(mixed).byteLength);
});

Deno.test("exceedsUtf8() decides by bytes, not characters", () => {
  assert.equal(exceedsUtf8("a".repeat(10), 10), false);
  assert.equal(exceedsUtf8("a".repeat(11), 10), true);
  assert.equal(exceedsUtf8("€".repeat(4), 12), false);
  assert.equal(exceedsUtf8("€".repeat(4), 11), true);
});

Deno.test("directKey() is the same in either order and never collides with rooms", () => {
  assert.equal(directKey("alice", "bob"), directKey("bob", "alice"));
  assert.notEqual(directKey("a", "b,c"), directKey("a,b", "c"));
  assert.notEqual(roomKey("dm"), directKey("d", "m"));
  assert.equal(
    conversationKey({ type: "direct", from: "bob", to: "alice", content: "x" }),
    directKey("alice", "bob"),
  );
  assert.equal(
    conversationKey({ type: "message", room: "lobby", sender: "x", content: "y" }),
    "room:lobby",
  );
});
