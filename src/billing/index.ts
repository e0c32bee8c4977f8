export { validateEvent, MAX_ID_BYTES } from "./validate.js";
export { decodeEvent, encodeEventJson } from "./decode.js";
export { describeEvent, enumLabel, isKnownEnum } from "./describe.js";
