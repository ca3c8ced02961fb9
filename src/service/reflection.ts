// Server reflection, fed from the generated descriptors so grpcurl can list, describe
// and call every service with JSON bodies and no .proto files at hand.
import { toBinary, type DescFile } from '@bufbuild/protobuf';
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt';
import type { Server } from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { file_grpc_health_v1_health } from '../../gen/grpc/health/v1/health_pb.js';

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
  // grpc.health.v1 from our own generated copy of gRPC's health.proto: the descriptor that
  // grpc-health-check carries is made by protobufjs, with relative type names and a map
  // entry named `Statuses`. Go's protodesc (under grpcurl) refuses that file ("incorrect
  // implicit map entry name"), and protobuf-es cannot resolve its type names.
  const health = [toBinary(FileDescriptorProtoSchema, file_grpc_health_v1_health.proto)];
  // @grpc/reflection reads only `fileDescriptorProtos` from each entry of the package definition.
  const packageDefinition = {
    plughost: { fileDescriptorProtos: ours },
    health: { fileDescriptorProtos: health },
  } as unknown as ConstructorParameters<typeof ReflectionService>[0];
  new ReflectionService(packageDefinition).addToServer(server);
}
