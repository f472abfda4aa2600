/**
 * HTTP error answers: each carries the JSON error code that names what went wrong, so a client
 * can tell an unknown path (`not_found`) from a known route asked with the wrong method
 * (`method_not_allowed`) and from a malformed request (`invalid_message`).
 */
import assert from "node:assert/strict";
import { startTestServer } from "./helpers/server.ts";

const sanitized = { sanitizeOps: true, sanitizeResources: true, sanitizeExit: true };

function test(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ...sanitized, fn });
}

/** Sends one request and returns its status, headers and JSON error. */
async function ask(url: URL, init: RequestInit = {}) {
  const response = await fetch(url, init);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  const body = await response.json() as { error: { code: string; message: string } };
  return { status: response.status, headers: response.headers, error: body.error };
}

test("an unknown path is answered 404 with code not_found", async () => {
  await using server = await startTestServer();
  for (const path of ["nope", "api/rooms/lobby", "api/rooms/lobby/messages/1", "app.jsx"]) {
    const answer = await ask(new URL(path, server.url));
    assert.equal(answer.status, 404, path);
    assert.equal(answer.error.code, "not_found", path);
    assert.match(answer.error.message, new RegExp(path.replaceAll(".", "\\.")));
  }
});

test("a known route asked with the wrong method is answered 405 with code method_not_allowed", async () => {
  await using server = await startTestServer();
  const cases: [string, string, string][] = [
    ["DELETE", "healthz", "GET"],
    ["POST", "ws", "GET"],
    ["PUT", "api/rooms/lobby/messages", "GET, POST"],
  ];
  for (const [method, path, allow] of cases) {
    const answer = await ask(new URL(path, server.url), { method });
    assert.equal(answer.status, 405, `${method} ${path}`);
    assert.equal(answer.error.code, "method_not_allowed", `${method} ${path}`);
    assert.equal(answer.headers.get("allow"), allow, `${method} ${path}`);
  }
});

test("publishing without --api-key is answered 404 with code not_found", async () => {
  await using server = await startTestServer();
  const answer = await ask(new URL("api/rooms/lobby/messages", server.url), {
    method: "POST",
    headers: { authorization: "Bearer key" },
    body: JSON.stringify({ content: "hi", sender: "bot" }),
  });
  assert.equal(answer.status, 404);
  assert.equal(answer.error.code, "not_found");
});

test("a malformed request to a known route still gets invalid_message", async () => {
  await using server = await startTestServer();
  const answer = await ask(new URL("api/rooms/lobby/messages?limit=0", server.url));
  assert.equal(answer.status, 400);
  assert.equal(answer.error.code, "invalid_message");
});
