// Named FIFOs. CRIU records a FIFO twice under one id: a reg_file_entry with its path and open
// flags (restore reopens the path) and a fifo_entry naming the pipe (its inode); the queued
// bytes go once per FIFO into fifo-data.img, like pipe data.
import { create } from '@bufbuild/protobuf';
import { fd_types } from '../../images/gen/fdinfo_pb.js';
import { pipe_data_entrySchema } from '../../images/gen/pipe-data_pb.js';
import { native } from '../../native.js';
import { S_IFIFO, S_IFMT, type FdKind } from './kind.js';

const DEFAULT_PIPE_SIZE = 65536;

export const fifos: FdKind = {
  name: 'FIFOs',
  matches: (fd) => fd.target.startsWith('/') && !fd.target.endsWith(' (deleted)') && (fd.mode & S_IFMT) === S_IFIFO,
  async entry(c) {
    const pipeId = Number(c.fd.ino);
    if (c.firstTime(`fifo:${c.fd.dev}:${c.fd.ino}`)) {
      const contents = native.peekPipe(c.pid, c.fd.fd);
      if (contents.data.length > 0 || contents.capacity !== DEFAULT_PIPE_SIZE) {
        const data = await c.image('fifo-data.img');
        await data.append(
          pipe_data_entrySchema,
          create(pipe_data_entrySchema, { pipeId, bytes: contents.data.length, size: contents.capacity }),
          contents.data,
        );
      }
    }
    await c.fileEntry({
      type: fd_types.REG,
      id: c.id,
      reg: { id: c.id, flags: c.fileFlags, pos: 0n, fown: c.fown, name: c.fd.target, mode: c.fd.mode },
    });
    return { type: fd_types.FIFO, id: c.id, fifo: { id: c.id, pipeId } };
  },
};
