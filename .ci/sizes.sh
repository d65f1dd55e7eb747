#!/bin/sh
# The largest files and functions of the daemon (the packages
# cmd/redis-consul-agent links, tests left out).
files=$(go list -deps -f '{{if .Module}}{{if .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}} {{end}}{{end}}{{end}}' ./cmd/redis-consul-agent | tr ' ' '\n' | sed "s|^$PWD/||" | grep .)
echo "files:"; wc -l $files | sort -rn | sed -n 1,9p
echo "functions:"; awk '/^func /{n=$0; s=FNR} /^}/{if(n!=""){printf "%5d %s:%d %s\n", FNR-s+1, FILENAME, s, substr(n,1,60)}; n=""}' $files | sort -rn | head -8
echo "functions over 80 lines: $(awk '/^func /{n=$0; s=FNR} /^}/{if(n!="" && FNR-s+1>80)c++; n=""} END{print c+0}' $files)"
