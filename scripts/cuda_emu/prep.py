#!/usr/bin/env python3
"""Turns a gpu/cuda/*.cu file into C++ for the CPU emulator (emu.h): comments are dropped (so
that the launch pattern cannot match inside one), dynamic shared memory becomes the emulator's
per-launch buffer, and each kernel<<<grid, block, smem, stream>>>(args); launch becomes
emu_launch(grid, block, smem, stream, [&]() { kernel(args); });
usage: prep.py IN.cu OUT.cpp"""
import re
import sys

src = open(sys.argv[1]).read()
src = re.sub(r'//[^\n]*', '', src)
src = src.replace('extern __shared__ float sm[];', 'float *sm = (float *)emu_dyn_smem();')
src = re.sub(r'(\w+(?:<\w+>)?)\s*<<<(.*?)>>>\s*\((.*?)\);',
             lambda m: 'emu_launch(%s, [&]() { %s(%s); });' % (m.group(2), m.group(1), m.group(3)),
             src, flags=re.S)
open(sys.argv[2], 'w').write('#include "emu.h"\n' + src)
