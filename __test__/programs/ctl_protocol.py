"""The CTL protocol of the test targets (__test__/targets/common.h) for Python programs: files
published atomically (tmp + rename) into the control directory."""
import os


def publish(ctl, name, text):
    tmp = os.path.join(ctl, ".%s.%d.tmp" % (name, os.getpid()))
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(ctl, name))
