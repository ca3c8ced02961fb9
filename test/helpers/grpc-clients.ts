// Plain grpc-js clients for the standard services (health, reflection) that tests and
// benchmarks talk to, the way grpcurl and load balancers do.
import { credentials, loadPackageDefinition, makeGenericClientConstructor, type Client } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { service as healthService } from 'grpc-health-check';

type Callback<T> = (err: Error | null, value?: T) => void;
type Unary = (req: object, cb: Callback<Record<string, unknown>>) => void;

export async function healthCheck(address: string, service = ''): Promise<string> {
  const Health = makeGenericClientConstructor(healthService, 'Health');
  const client = new Health(address, credentials.createInsecure()) as unknown as Client & { check: Unary };
  try {
    const res = await new Promise<Record<string, unknown>>((resolve, reject) =>
      client.check({ service }, (err, value) => (err ? reject(err) : resolve(value!))),
    );
    return String(res.status);
  } finally {
    client.close();
  }
}

/** One grpc.reflection.v1 response, the one the server gives to `request` (as grpcurl asks). */
export interface ReflectionResponse {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: Uint8Array[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

export async function reflectionRequest(
  address: string,
  request: { listServices: string } | { fileContainingSymbol: string } | { fileByFilename: string },
): Promise<ReflectionResponse> {
  const require = createRequire(import.meta.url);
  const root = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build/proto');
  const def = loadSync('grpc/reflection/v1/reflection.proto', { includeDirs: [root] });
  const pkg = loadPackageDefinition(def) as unknown as {
    grpc: { reflection: { v1: { ServerReflection: new (a: string, c: ReturnType<typeof credentials.createInsecure>) => Client & { serverReflectionInfo(): NodeJS.ReadWriteStream & { write(m: object): void; end(): void } } } } };
  };
  const client = new pkg.grpc.reflection.v1.ServerReflection(address, credentials.createInsecure());
  try {
    const call = client.serverReflectionInfo();
    const reply = new Promise<ReflectionResponse>((resolve, reject) => {
      call.on('data', resolve);
      call.on('error', reject);
    });
    call.write(request);
    const r = await reply;
    call.end();
    if (r.errorResponse) throw new Error(`reflection: ${r.errorResponse.errorMessage}`);
    return r;
  } finally {
    client.close();
  }
}

/** The service names the server lists through grpc.reflection.v1 (as `grpcurl list` does). */
export async function reflectionListServices(address: string): Promise<string[]> {
  const r = await reflectionRequest(address, { listServices: '' });
  return (r.listServicesResponse?.service ?? []).map((s) => s.name).sort();
}
