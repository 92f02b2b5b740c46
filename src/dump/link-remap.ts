// CRIU's link remaps (--link-remap): a file a task holds under a name that is gone while the file
// keeps other hard links (unlinked under this name, or no longer reachable by it) cannot be
// reopened by that name, and is not a ghost (its contents live on in the file system). The dump
// adds a hard link to it, link_remap.ID, in the directory it sat in; the images name that link
// (a REG entry and a LINKED remap), and restore links it back under the old name, opens it,
// unlinks it again and removes link_remap.ID. Like CRIU, the links are removed again when the
// dump fails or the tree runs on (--leave-running): they are only for a restore of a tree that
// is gone.
import { stat } from 'node:fs/promises';
import { native } from '../native.js';

export class LinkRemaps {
  private readonly made: { path: string; dev: bigint; ino: bigint }[] = [];

  /** Hard-links the file behind `source` (a /proc link of the task's) beside `path`; the link's path. */
  async create(source: string, path: string, id: number): Promise<string> {
    const st = await stat(source, { bigint: true });
    const made = native.linkRemap(source, path, `link_remap.${id}`);
    this.made.push({ path: made, dev: st.dev, ino: st.ino });
    return made;
  }

  /** Removes every link made (a link replaced by another file since is left alone); what failed. */
  rollback(): string[] {
    const failed: string[] = [];
    for (const m of this.made.splice(0)) {
      try {
        native.unlinkRemap(m.path, m.dev, m.ino);
      } catch (err) {
        failed.push(err instanceof Error ? err.message : String(err));
      }
    }
    return failed;
  }
}
