// Pipes: one pipe_entry per open end, and the queued bytes once per pipe in pipes-data.img.
import { create } from '@bufbuild/protobuf';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { pipe_data_entrySchema } from '../../images/gen/pipe-data_pb.js';
import { native } from '../../native.js';
import { linkInode, type FdKind } from './kind.js';

const DEFAULT_PIPE_SIZE = 65536;

export const pipes: FdKind = {
  name: 'pipes',
  matches: (fd) => linkInode(fd.target, 'pipe') !== undefined,
  async entry(c) {
    const ino = linkInode(c.fd.target, 'pipe')!;
    // The queued bytes belong to the pipe, not to either end: written once.
    if (c.firstTime(`pipe:${ino}`)) {
      const contents = native.peekPipe(c.pid, c.fd.fd);
      if (contents.data.length > 0 || contents.capacity !== DEFAULT_PIPE_SIZE) {
        const data = await c.image('pipes-data.img');
        await data.append(
          pipe_data_entrySchema,
          create(pipe_data_entrySchema, { pipeId: Number(ino), bytes: contents.data.length, size: contents.capacity }),
          contents.data,
        );
      }
    }
    return { type: fd_types.PIPE, id: c.id, pipe: { id: c.id, pipeId: Number(ino), flags: c.fileFlags, fown: c.fown } };
  },
};
