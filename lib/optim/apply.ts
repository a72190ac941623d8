/**
 * Applying updates: `params + updates`, leaf by leaf.
 *
 * @module
 */
import { tf } from "../deps.ts";
import { type Params, zipTree } from "../core/tree.ts";
import { tidy } from "./transform.ts";

/**
 * Returns NEW params `p + u` (inputs untouched; the caller disposes the old params and the updates).
 * Throws naming the first parameter missing on either side.
 */
export const applyUpdates = <P extends Params>(params: P, updates: Params): P =>
  tidy(() => zipTree(params, updates, (p, u) => tf.add(p, u)));
