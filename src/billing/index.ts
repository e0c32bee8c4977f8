export { validateEvent } from "./validate.js";
export { MAX_ID_BYTES, checkId, checkText, idProblem } from "./ids.js";
export { decodeEvent, decodeEventList, encodeEventJson, type DecodedEvent } from "./decode.js";
export { describeEvent, enumLabel, isKnownEnum } from "./describe.js";
