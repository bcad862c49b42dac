// Loopback sender-cost micro-benchmark (bench/README.md, "1 MiB: where the
// server CPU goes"): CPU seconds per GiB that a process spends moving a cached
// file to N TCP sockets again and again, by method; the sender is pinned to
// CPU 0, the receiver (64 KiB recv) to CPU 1, like `bench/run --layouts pinned`.
//   gcc -O2 -o /tmp/sendcost bench/sendcost.c
//   /tmp/sendcost FILE METHOD SECONDS [CONNS]   (CC=cubic / LOWAT=BYTES: socket options)
// METHOD: 0 sendfile whole file per call, 1 sendfile 256 KiB per call,
// 2 splice file -> pipe -> socket, 3 send from an mmap (copy), 4 MSG_ZEROCOPY from an mmap.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec/1e9;}
static double cpu(int who){struct rusage r;getrusage(who,&r);return r.ru_utime.tv_sec+r.ru_utime.tv_usec/1e6+r.ru_stime.tv_sec+r.ru_stime.tv_usec/1e6;}
static void waitout(int s){struct pollfd p={s,POLLOUT,0};poll(&p,1,-1);}
static long zc_pending;
static void reap(int s){ // drain MSG_ZEROCOPY completions
  char c[128];struct msghdr m={0};m.msg_control=c;m.msg_controllen=sizeof c;
  while(recvmsg(s,&m,MSG_ERRQUEUE|MSG_DONTWAIT)>=0){
    struct cmsghdr*cm=CMSG_FIRSTHDR(&m); if(cm){struct sock_extended_err*e=(void*)CMSG_DATA(cm);
      if(e->ee_origin==SO_EE_ORIGIN_ZEROCOPY) zc_pending-=(long)(e->ee_data-e->ee_info+1);}
    m.msg_controllen=sizeof c;}
}
int main(int argc,char**argv){
  const char*path=argv[1]; int method=atoi(argv[2]); double dur=atof(argv[3]); int conns=argc>4?atoi(argv[4]):1;
  int f=open(path,O_RDONLY); off_t size=lseek(f,0,SEEK_END);
  char*map=mmap(0,size,PROT_READ,MAP_SHARED,f,0);
  int l=socket(AF_INET,SOCK_STREAM,0); int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4);
  struct sockaddr_in a={.sin_family=AF_INET,.sin_addr.s_addr=htonl(0x7f000001)};
  bind(l,(void*)&a,sizeof a); listen(l,64); socklen_t al=sizeof a; getsockname(l,(void*)&a,&al);
  int pfd[2]; pipe(pfd);
  pid_t kid=fork();
  if(!kid){ pin(1); close(pfd[0]); static char buf[65536]; long tot=0; int c[64];
    for(int i=0;i<conns;i++) c[i]=accept(l,0,0);
    struct pollfd p[64]; for(int i=0;i<conns;i++){p[i].fd=c[i];p[i].events=POLLIN;}
    int open_=conns; while(open_){ poll(p,conns,-1); for(int i=0;i<conns;i++) if(p[i].fd>=0&&p[i].revents){
      ssize_t n=recv(p[i].fd,buf,sizeof buf,0); if(n<=0){close(p[i].fd);p[i].fd=-1;open_--;} else tot+=n;}}
    double cc=cpu(RUSAGE_SELF); write(pfd[1],&cc,sizeof cc); write(pfd[1],&tot,sizeof tot); _exit(0);}
  pin(0); close(pfd[1]);
  int s[64]; for(int i=0;i<conns;i++){ s[i]=socket(AF_INET,SOCK_STREAM,0); connect(s[i],(void*)&a,sizeof a);
    fcntl(s[i],F_SETFL,O_NONBLOCK); if(getenv("LOWAT")){int v=atoi(getenv("LOWAT"));setsockopt(s[i],IPPROTO_TCP,TCP_NOTSENT_LOWAT,&v,4);} if(getenv("CC")) setsockopt(s[i],IPPROTO_TCP,TCP_CONGESTION,getenv("CC"),strlen(getenv("CC"))); if(method==4) setsockopt(s[i],SOL_SOCKET,SO_ZEROCOPY,&one,4);}
  int pps[64][2]; for(int i=0;i<conns;i++){pipe(pps[i]); fcntl(pps[i][0],F_SETPIPE_SZ,1<<20);}
  double c0=cpu(RUSAGE_SELF), t0=now(); long sent=0; off_t off[64]={0}; long inpipe[64]={0};
  // each connection: send the file again and again (a 1 MiB "response" each time)
  while(now()-t0<dur){
    for(int i=0;i<conns;i++){
      int k=s[i]; long n=0; int*pp=pps[i];
      for(;;){ // one turn: until EAGAIN or 2 MiB
        long want=size-off[i]; long cap=method==1?256*1024:want;
        if(want<=0){off[i]=0;continue;}
        if(method==0||method==1){ off_t o=off[i]; n=sendfile(k,f,&o,want<cap?want:cap);}
        else if(method==2){ if(!inpipe[i]){ loff_t o=off[i]; long m=splice(f,&o,pp[1],0,want,SPLICE_F_MOVE); if(m<=0){n=m;break;} inpipe[i]=m;}
          n=splice(pp[0],0,k,0,inpipe[i],SPLICE_F_MOVE|SPLICE_F_NONBLOCK); if(n>0) inpipe[i]-=n; }
        else if(method==3) n=send(k,map+off[i],want,MSG_NOSIGNAL);
        else { n=send(k,map+off[i],want,MSG_NOSIGNAL|MSG_ZEROCOPY); if(n>0) zc_pending++; reap(k);}
        if(n<0) break;
        off[i]+=n; sent+=n; if(off[i]>=size) off[i]=0;
      }
      if(n<0&&errno!=EAGAIN){perror("send");return 1;}
    }
    if(conns==1) waitout(s[0]); else { struct pollfd p[64]; for(int i=0;i<conns;i++){p[i].fd=s[i];p[i].events=POLLOUT;} poll(p,conns,-1);}
  }
  if(method==4) for(int i=0;i<conns;i++) reap(s[i]);
  double cs=cpu(RUSAGE_SELF)-c0, w=now()-t0;
  for(int i=0;i<conns;i++) close(s[i]);
  double cr; long tot; read(pfd[0],&cr,sizeof cr); read(pfd[0],&tot,sizeof tot); waitpid(kid,0,0);
  double gib=sent/1073741824.0;
  const char*names[]={"sendfile-1MiB","sendfile-256KiB","splice-pipe","send-copy(mmap)","MSG_ZEROCOPY(mmap)"};
  printf("%-20s %s%s %s%s conns %d GiB/s %6.2f sender s/GiB %.3f receiver s/GiB %.3f\n",names[method],getenv("LOWAT")?"lowat=":"",getenv("LOWAT")?getenv("LOWAT"):"",getenv("CC")?"cc=":"",getenv("CC")?getenv("CC"):"",conns,gib/w,cs/gib,cr/gib);
  return 0;
}
