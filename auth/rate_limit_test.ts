import assert from "node:assert/strict";
import { RateLimiter } from "./rate_limit.ts";

function limiter(now: { ms: number }) {
  return new RateLimiter<object>({ rate: 10, burst: 2, strikes: 3, now: () => now.ms });
}

Deno.test("RateLimiter admits a burst, refills at its rate, and calls strikes in a row abuse", () => {
  const now = { ms: 0 };
  const limits = limiter(now);
  const client = {};
  assert.deepEqual([limits.admit(client), limits.admit(client)], ["ok", "ok"]);
  assert.deepEqual(
    [limits.admit(client), limits.admit(client), limits.admit(client)],
    ["limited", "limited", "abuse"],
  );
  now.ms += 100; // one token back
  assert.equal(limits.admit(client), "ok");
  assert.equal(limits.admit(client), "limited", "an admitted frame resets the strikes");
});

Deno.test("RateLimiter counts no strike for a refusal the server asks it to forgive (overloaded)", () => {
  const now = { ms: 0 };
  const limits = limiter(now);
  const client = {};
  limits.admit(client);
  limits.admit(client);
  for (let i = 0; i < 10; i++) assert.equal(limits.admit(client, false), "limited");
  assert.deepEqual(
    [limits.admit(client), limits.admit(client), limits.admit(client)],
    ["limited", "limited", "abuse"],
    "strikes count again from zero once the server is not overloaded",
  );
});
