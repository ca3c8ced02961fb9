// A stand-in for grpcurl (a Go binary that neither Debian nor npm carries here), so that the
// README's grpcurl lines run as written against a real server. It does what grpcurl does
// and nothing of ours: server reflection for the descriptors, proto3 JSON in and out, and
// the subset of flags the README uses: -plaintext, -H, -d (text or @ for stdin), then the
// address and `list`, `describe <symbol>` or `<service>/<method>`.
// Run: node --import tsx test/helpers/grpcurl.ts <args>   (test/readme.test.ts puts it on PATH)
import { create, createFileRegistry, fromBinary, fromJson, toBinary, toJson, type DescMethod, type FileRegistry, type JsonValue } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from '@bufbuild/protobuf/wkt';
import { Client, Metadata, credentials, status, type ServiceError } from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { reflectionRequest } from './grpc-clients.js';

function usage(message: string): never {
  process.stderr.write(`grpcurl (stand-in): ${message}\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
const headers: string[] = [];
let data: string | undefined;
let plaintext = false;
while (args[0]?.startsWith('-')) {
  const flag = args.shift()!;
  if (flag === '-plaintext') plaintext = true;
  else if (flag === '-H') headers.push(args.shift() ?? usage('-H needs a value'));
  else if (flag === '-d') data = args.shift() ?? usage('-d needs a value');
  else usage(`unsupported flag ${flag}`);
}
if (!plaintext) usage('only -plaintext is supported');
const [address, verb, symbol] = args;
if (!address || !verb) usage('usage: grpcurl -plaintext [-H h] [-d data] <address> list|describe <symbol>|<service/method>');

/** Splits whitespace-separated JSON values, as grpcurl reads -d. */
function jsonValues(text: string): JsonValue[] {
  const out: JsonValue[] = [];
  let depth = 0;
  let start = -1;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      if (ch === '\\') i++;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    else if (ch === '{') {
      if (depth++ === 0) start = i;
    } else if (ch === '}' && --depth === 0) out.push(JSON.parse(text.slice(start, i + 1)) as JsonValue);
  }
  return out;
}

/** The file that defines `symbol` and every file it imports, as a registry. */
async function registryFor(name: string): Promise<FileRegistry> {
  const files = new Map<string, FileDescriptorProto>();
  const add = (bytes: Uint8Array[]) => {
    for (const b of bytes) {
      const f = fromBinary(FileDescriptorProtoSchema, b);
      files.set(f.name, f);
    }
  };
  add(await reflectionRequest(address!, { fileContainingSymbol: name }).then((r) => r.fileDescriptorResponse?.fileDescriptorProto ?? []));
  const missing = () => [...files.values()].flatMap((f) => f.dependency).filter((d) => !files.has(d));
  for (let m = missing(); m.length > 0; m = missing()) {
    for (const d of m) add(await reflectionRequest(address!, { fileByFilename: d }).then((r) => r.fileDescriptorResponse?.fileDescriptorProto ?? []));
    if (!files.has(m[0]!)) usage(`the server's reflection does not give ${m[0]}`);
  }
  // a registry takes each file after the files it imports
  const ordered: FileDescriptorProto[] = [];
  const visit = (f: FileDescriptorProto) => {
    if (ordered.includes(f)) return;
    for (const d of f.dependency) visit(files.get(d)!);
    ordered.push(f);
  };
  files.forEach(visit);
  return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
}

function printError(e: ServiceError): never {
  // grpcurl names codes the Go way: NOT_FOUND is NotFound
  const name = status[e.code]!.toLowerCase().replace(/(^|_)([a-z])/g, (_, _s, c: string) => c.toUpperCase());
  process.stderr.write(`ERROR:\n  Code: ${name}\n  Message: ${e.details}\n`);
  process.exit(64 + e.code);
}

async function call(method: DescMethod, registry: FileRegistry): Promise<void> {
  const client = new Client(address!, credentials.createInsecure());
  const metadata = new Metadata();
  for (const h of headers) {
    const i = h.indexOf(':');
    metadata.add(h.slice(0, i).trim().toLowerCase(), h.slice(i + 1).trim());
  }
  const path = `/${method.parent.typeName}/${method.name}`;
  const serialize = (v: JsonValue) => Buffer.from(toBinary(method.input, fromJson(method.input, v, { registry })));
  const deserialize = (b: Buffer) => fromBinary(method.output, b);
  const print = (m: ReturnType<typeof deserialize>) => process.stdout.write(`${JSON.stringify(toJson(method.output, m, { registry }), null, 2)}\n`);
  const text = data === '@' ? readFileSync(0, 'utf8') : data ?? '{}';
  const requests = jsonValues(text);
  try {
    if (method.methodKind === 'unary' || method.methodKind === 'server_streaming') {
      if (requests.length !== 1) usage(`${method.name} takes one request, got ${requests.length}`);
      if (method.methodKind === 'unary') {
        print(await new Promise((resolve, reject) => client.makeUnaryRequest(path, serialize, deserialize, requests[0]!, metadata, (e, v) => (e ? reject(e) : resolve(v!)))));
      } else {
        const stream = client.makeServerStreamRequest(path, serialize, deserialize, requests[0]!, metadata);
        for await (const m of stream) print(m as ReturnType<typeof deserialize>);
      }
    } else if (method.methodKind === 'client_streaming') {
      print(
        await new Promise((resolve, reject) => {
          const stream = client.makeClientStreamRequest(path, serialize, deserialize, metadata, (e, v) => (e ? reject(e) : resolve(v!)));
          for (const r of requests) stream.write(r);
          stream.end();
        }),
      );
    } else {
      const stream = client.makeBidiStreamRequest(path, serialize, deserialize, metadata);
      for (const r of requests) stream.write(r);
      stream.end();
      for await (const m of stream) print(m as ReturnType<typeof deserialize>);
    }
  } catch (e) {
    if (e && typeof e === 'object' && 'code' in e) printError(e as ServiceError);
    throw e;
  } finally {
    client.close();
  }
}

if (verb === 'list') {
  const r = await reflectionRequest(address, { listServices: '' });
  for (const s of (r.listServicesResponse?.service ?? []).map((x) => x.name).sort()) process.stdout.write(`${s}\n`);
} else if (verb === 'describe') {
  if (!symbol) usage('describe needs a symbol');
  const registry = await registryFor(symbol);
  const service = registry.getService(symbol) ?? usage(`${symbol} is not a service`);
  process.stdout.write(`${symbol} is a service:\nservice ${service.name} {\n`);
  for (const m of service.methods) {
    const stream = (yes: boolean) => (yes ? 'stream ' : '');
    const inStream = m.methodKind === 'client_streaming' || m.methodKind === 'bidi_streaming';
    const outStream = m.methodKind === 'server_streaming' || m.methodKind === 'bidi_streaming';
    process.stdout.write(`  rpc ${m.name} ( ${stream(inStream)}.${m.input.typeName} ) returns ( ${stream(outStream)}.${m.output.typeName} );\n`);
  }
  process.stdout.write('}\n');
} else {
  const slash = verb.lastIndexOf('/');
  if (slash < 0) usage(`${verb} is not list, describe or service/method`);
  const serviceName = verb.slice(0, slash);
  const registry = await registryFor(serviceName);
  const service = registry.getService(serviceName) ?? usage(`no service ${serviceName}`);
  const method = service.methods.find((m) => m.name === verb.slice(slash + 1)) ?? usage(`${serviceName} has no method ${verb.slice(slash + 1)}`);
  await call(method, registry);
}
