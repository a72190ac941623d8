/**
 * For tests/quiet_test.ts: selects the backend named by the first argument, computes one op on it, and prints
 * only `backend <name>`; anything else in the output came from below.
 *
 * @module
 */
import { type BackendChoice, selectBackend } from "../../lib/core/backend.ts";
import { tf } from "../../lib/deps.ts";

const info = await selectBackend((Deno.args[0] ?? "auto") as BackendChoice);
tf.tensor1d([1, 2]).square().dispose();
console.log(`backend ${info.name}`);
