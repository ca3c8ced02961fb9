// grpc-js service definitions built from the protobuf-es descriptors in gen/, so the
// server speaks exactly the messages the public API declares.
import { fromBinary, toBinary, type DescMessage, type DescService, type MessageShape } from '@bufbuild/protobuf';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';

function serializer<D extends DescMessage>(schema: D) {
  return (value: MessageShape<D>): Buffer => {
    const bytes = toBinary(schema, value);
    // grpc-js wants a Buffer; this views the same memory without copying.
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(schema: D) {
  return (bytes: Buffer): MessageShape<D> => fromBinary(schema, bytes);
}

/** `responseSerializers` replaces the serializer of a method's responses, by the method's local name (e.g. `stream`). */
export function grpcServiceDefinition(service: DescService, responseSerializers: Record<string, (v: never) => Buffer> = {}): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
      responseStream: method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      requestSerialize: serializer(method.input) as (v: unknown) => Buffer,
      requestDeserialize: deserializer(method.input),
      responseSerialize: (responseSerializers[method.localName] ?? serializer(method.output)) as (v: unknown) => Buffer,
      responseDeserialize: deserializer(method.output),
      originalName: method.name,
    };
  }
  return definition;
}
