# bash completion for veylor, generated from its command line by `veylor completion bash`

# The value of option $2 of command $1 ("" before a command): REPLY is @files, @any
# (nothing to offer), the choices, or empty for an option that takes no value.
_veylor_value()
{
    case "$1 $2" in
        *" -c"|*" --config"|*" --against"|*" --token-file") REPLY="@files" ;;
        *" --watch") REPLY="auto poll" ;;
        *" --log-format") REPLY="text json" ;;
        *" --admin"|*" --port"|*" --rate") REPLY="@any" ;;
        *) REPLY= ;;
    esac
}

# The options of command $1.
_veylor_options()
{
    case "$1" in
        "") REPLY="-h --help --version -c --config -v --verbose --tui --watch --no-watch --trace-frames --log-format" ;;
        "run") REPLY="-h --help -c --config -v --verbose --tui --watch --no-watch --trace-frames --log-format" ;;
        "check") REPLY="-h --help -c --config -v --verbose --json --against" ;;
        "reload") REPLY="-h --help -c --config -v --verbose --admin --token-file --dry-run --json" ;;
        "top") REPLY="-h --help -c --config -v --verbose --admin --token-file --read-only" ;;
        "status") REPLY="-h --help -c --config -v --verbose --admin --token-file --json" ;;
        "health") REPLY="-h --help -c --config -v --verbose --admin --token-file" ;;
        "demo") REPLY="-h --help -v --verbose --trace-frames --tui --port --rate" ;;
        "completion") REPLY="-h --help" ;;
        *) REPLY= ;;
    esac
}

# The choices of positional argument $2 (0 for the first) of command $1.
_veylor_positional()
{
    case "$1 $2" in
        "completion 0") REPLY="bash zsh fish" ;;
        *) REPLY= ;;
    esac
}

_veylor()
{
    local cur=${COMP_WORDS[COMP_CWORD]} prev= command= word i=1 arg=0 REPLY
    COMPREPLY=()
    # bash splits --option=value at the '=' (COMP_WORDBREAKS): --option, =, value.
    if [[ $cur == = ]]; then
        cur=
        prev=${COMP_WORDS[COMP_CWORD-1]}
    elif (( COMP_CWORD > 1 )) && [[ ${COMP_WORDS[COMP_CWORD-1]} == = ]]; then
        prev=${COMP_WORDS[COMP_CWORD-2]}
    elif (( COMP_CWORD > 1 )); then
        prev=${COMP_WORDS[COMP_CWORD-1]}
    fi
    # The command, and how many of its positional arguments come before the cursor.
    while (( i < COMP_CWORD )); do
        word=${COMP_WORDS[i]}
        if [[ $word == -* ]]; then
            if [[ ${COMP_WORDS[i+1]} == = ]]; then
                (( i += 2 ))
            else
                _veylor_value "$command" "$word"
                [[ -n $REPLY ]] && (( i += 1 ))
            fi
        elif [[ -z $command && " run check reload top status health demo completion " == *" $word "* ]]; then
            command=$word
        elif [[ $word != = ]]; then
            (( arg += 1 ))
        fi
        (( i += 1 ))
    done
    if [[ $prev == -* ]]; then
        _veylor_value "$command" "$prev"
        case $REPLY in
            "") ;;
            @any) return 0 ;;
            @files)
                compopt -o filenames 2>/dev/null
                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
                return 0
                ;;
            *)
                mapfile -t COMPREPLY < <(compgen -W "$REPLY" -- "$cur")
                return 0
                ;;
        esac
    fi
    if [[ $cur != -* ]]; then
        if [[ -z $command ]]; then
            mapfile -t COMPREPLY < <(compgen -W "run check reload top status health demo completion" -- "$cur")
            return 0
        fi
        _veylor_positional "$command" "$arg"
        if [[ -n $REPLY ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$REPLY" -- "$cur")
            return 0
        fi
    fi
    _veylor_options "$command"
    mapfile -t COMPREPLY < <(compgen -W "$REPLY" -- "$cur")
}

complete -F _veylor veylor
