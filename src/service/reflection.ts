// Server reflection, fed from the generated descriptors so grpcurl can list, describe
// and call every service with JSON bodies and no .proto files at hand.
import { toBinary, type DescFile } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import type { Server } from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { service as healthService } from 'grpc-health-check';

function withDependencies(files: DescFile[]): DescFile[] {
  const seen = new Map<string, DescFile>();
  const visit = (f: DescFile) => {
    if (seen.has(f.name)) return;
    seen.set(f.name, f);
    f.dependencies.forEach(visit);
  };
  files.forEach(visit);
  return [...seen.values()];
}

export function addReflection(server: Server, files: DescFile[]): void {
  const ours = withDependencies(files).map((f) => toBinary(FileDescriptorProtoSchema, f.proto));
  const health = (healthService.Check?.requestType as { fileDescriptorProtos?: Buffer[] } | undefined)
    ?.fileDescriptorProtos ?? [];
  // @grpc/reflection reads only `fileDescriptorProtos` from each entry of the package definition.
  const packageDefinition = {
    plughost: { fileDescriptorProtos: ours },
    health: { fileDescriptorProtos: health },
  } as unknown as ConstructorParameters<typeof ReflectionService>[0];
  new ReflectionService(packageDefinition).addToServer(server);
}
