// The gRPC service as a library ('plughost/service'): `Plughost.start(config)` takes the
// configuration file's keys as an object, as `plughost serve` does after reading its file,
// the environment and its flags.
export { Plughost } from './plughost.js';
export type { StartOptions } from './plughost.js';
export { configSchema, parseConfig } from './config.js';
export type { PlughostConfig, PlughostConfigInput } from './config.js';
